from fgvc.train.summary import metrics_table


def test_the_summary_says_train_and_val_accuracy_are_the_best_epochs():
    text = metrics_table({"train_acc": 0.1667, "val_acc": 0.5, "test_acc": 0.25, "best_epoch": 7, "epochs_run": 9})
    lines = {line[:24].strip(): line[24:].strip() for line in text.splitlines()}
    assert lines["train acc (epoch 7)"] == "0.1667" and lines["val acc (epoch 7)"] == "0.5000"
    assert lines["test acc"] == "0.2500" and lines["epochs run"] == "9"
