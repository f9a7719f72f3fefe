from fgvc.train.summary import metrics_table


def test_the_summary_says_train_and_val_accuracy_are_the_best_epochs():
    text = metrics_table({"train_acc": 0.1667, "val_acc": 0.5, "test_acc": 0.25, "best_epoch": 7, "epochs_run": 9})
    assert "train acc (epoch 7)     0.1667" in text and "val acc (epoch 7)       0.5000" in text
    assert "test acc                0.2500" in text and "epochs run              9" in text
