"""Record the training loss every step and draw it at the end of training."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L


class LossCurve(L.Callback):
    """Writes ``loss_curve.csv`` (step, loss) and ``loss_curve.png`` into ``dirpath`` at the end.

    Resumed runs keep their earlier points: the rows live in the callback's checkpoint state.
    """

    def __init__(self, dirpath: str, key: str = "train/loss") -> None:
        self.dirpath, self.key = Path(dirpath), key
        self.rows: list[tuple[int, float]] = []
        self.png_path: Path | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and trainer.is_global_zero:
            self.rows.append((trainer.global_step, float(loss.detach())))

    def on_train_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or not self.rows:
            return
        self.dirpath.mkdir(parents=True, exist_ok=True)
        with open(self.dirpath / "loss_curve.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["step", self.key])
            writer.writerows(self.rows)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps, losses = zip(*self.rows)
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(steps, losses, lw=0.6, alpha=0.4, label=self.key)
        window = max(1, len(losses) // 20)
        if window > 1:
            smooth = [
                sum(losses[max(0, i - window + 1) : i + 1])
                / len(losses[max(0, i - window + 1) : i + 1])
                for i in range(len(losses))
            ]
            ax.plot(steps, smooth, lw=1.5, label=f"moving mean ({window} steps)")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend()
        fig.tight_layout()
        self.png_path = self.dirpath / "loss_curve.png"
        fig.savefig(self.png_path, dpi=120)
        plt.close(fig)

    def state_dict(self) -> dict:
        return {"rows": list(self.rows)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = [tuple(r) for r in state_dict.get("rows", [])]
