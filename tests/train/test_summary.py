import pytest

from fgvc.train.summary import metrics_table


def test_the_summary_says_train_and_val_accuracy_are_the_best_epochs():
    text = metrics_table({"train_acc": 0.1667, "val_acc": 0.5, "test_acc": 0.25, "best_epoch": 7, "epochs_run": 9})
    lines = {line[:24].strip(): line[24:].strip() for line in text.splitlines()}
    assert lines["train acc (epoch 7)"] == "0.1667" and lines["val acc (epoch 7)"] == "0.5000"
    assert lines["test acc"] == "0.2500" and lines["epochs run"] == "9"


@pytest.mark.parametrize("losses", [(1.5, 1.42, 1.35, 1.3, 1.24, 1.2), (94.0, 3.1, 0.8, 0.31, 0.12, 0.05),
                                    (0.021, 0.0205, 0.02)])
def test_log_loss_axes_label_a_few_round_values_not_every_minor_tick(losses):
    from fgvc.report.figures import curves_figure as report_figure
    from fgvc.train.summary import curves_figure

    history = [{"epoch": i + 1, "train_loss": v, "val_loss": v * 1.05, "train_acc": 0.5, "val_acc": 0.5, "lr": 1e-3}
               for i, v in enumerate(losses)]
    figures = [curves_figure(history, "run"),
               report_figure([{"name": n, "history": history, "unfinished": False} for n in ("a", "b")])]
    for fig in figures:
        fig.canvas.draw()
        ax = fig.axes[0]
        assert ax.get_yscale() == "log"
        lo, hi = ax.get_ylim()
        shown = [(t.get_position()[1], t.get_text()) for t in [*ax.get_yticklabels(), *ax.get_yticklabels(minor=True)]
                 if t.get_text() and lo <= t.get_position()[1] <= hi]
        assert 2 <= len(shown) <= 7, shown  # a few labels, never one per minor tick
        assert all("10^" not in text and "times" not in text for _, text in shown), shown  # plain numbers
