"""Training nodes: fit a torch or Keras model on a dataset, reporting loss/accuracy per epoch.

Both report the same metric events (train_loss, train_acc, val_loss, val_acc with x = epoch),
check for cancellation between batches, are seeded (same seed, same weights), and record the test
accuracy and training time in the model's meta. The output keeps the input model's format.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Literal

from heiti.engine import Cancelled, DatasetHandle, In, ModelArtifact, Node, NodeError, Out
from heiti.nodes.models import step_meta
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # numpy loads when a node runs, not when the kinds are listed
    import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class TrainParams(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")

    epochs: int = Field(15, ge=1, le=10_000, description="passes over the train split")
    batch_size: int = Field(32, ge=1, le=65_536)
    lr: float = Field(3e-3, gt=0.0, description="learning rate (Adam)")
    weight_decay: float = Field(0.0, ge=0.0)
    schedule: Literal["constant", "cosine"] = Field("cosine", description="learning-rate schedule over the epochs")
    seed: int = Field(0, description="seed of shuffling, dropout and any random init")
    threads: int = Field(1, ge=0, description="torch CPU threads for training (0 = framework default); one is fastest for small models. Keras keeps TensorFlow's own setting")


def _epoch_end(ctx: Any, epoch: int, values: dict[str, float | None]) -> None:
    for name, value in values.items():
        if value is not None:
            ctx.metric(name, value, x=epoch)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in values.items() if v is not None)
    ctx.log(f"epoch {epoch}: {shown}")


class TrainTorch(Node):
    """Train a torch model (built-in or registered architecture) with Adam."""

    kind = "train.torch"
    warm_imports = ("torch",)
    title = "Train (PyTorch)"
    category = "Training"
    Params = TrainParams
    inputs = {"model": In(ModelArtifact, formats={"torch"}),
              "dataset": In(DatasetHandle, formats={"classification", "detection"})}
    outputs = {"model": Out(ModelArtifact, same_as="model")}

    def run(self, ctx: Any, model: ModelArtifact, dataset: DatasetHandle) -> dict[str, Any]:
        import torch
        from heiti.nodes.torch_arch import get_arch

        t0 = time.perf_counter()
        p = self.params
        if not model.meta.arch:
            raise NodeError("this torch model has no architecture in its meta; train models from model.torch_cnn "
                            "or a registered architecture")
        arch = get_arch(model.meta.arch)
        previous_threads = torch.get_num_threads()
        if p.threads:
            torch.set_num_threads(p.threads)
        try:
            return self._train(ctx, model, dataset, arch, t0)
        finally:
            torch.set_num_threads(previous_threads)

    def _train(self, ctx: Any, model: ModelArtifact, dataset: DatasetHandle, arch: Any, t0: float) -> dict[str, Any]:
        import numpy as np
        import torch
        from heiti.nodes.torch_arch import load_model, save_model

        p = self.params
        torch.manual_seed(p.seed)
        rng = np.random.default_rng(p.seed)
        module = load_model(model.path, model.meta)
        data = dataset.arrays()  # architectures batch from x_<split>/y_<split> (and their own arrays)
        n_train = dataset.split_size("train")
        if n_train == 0:
            raise NodeError("the dataset's train split is empty")
        optimizer = torch.optim.Adam(module.parameters(), lr=p.lr, weight_decay=p.weight_decay)
        steps_per_epoch = -(-n_train // p.batch_size)
        scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=p.epochs * steps_per_epoch)
                     if p.schedule == "cosine" else None)
        history = []
        for epoch in range(1, p.epochs + 1):
            module.train()
            totals = _Totals()
            for step, batch in enumerate(arch.make_batches(data, "train", p.batch_size, rng)):
                ctx.check_cancelled()
                optimizer.zero_grad()
                loss, stats = arch.loss(module, batch)
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                totals.add(float(loss.detach()), stats)
                ctx.progress(((epoch - 1) + (step + 1) / steps_per_epoch) / p.epochs, f"epoch {epoch}/{p.epochs}")
            val = self._evaluate(ctx, module, arch, data, "val", p.batch_size)
            values = {"train_loss": totals.loss, "train_acc": totals.acc, "val_loss": val.loss, "val_acc": val.acc,
                      **totals.extras("train"), **val.extras("val")}
            if arch.evaluate is not None and dataset.split_size("val"):
                values.update({f"val_{k}": v for k, v in arch.evaluate(module, dataset, "val", model.meta).items()})
            history.append({"epoch": epoch, **values})
            _epoch_end(ctx, epoch, values)
        test = self._evaluate(ctx, module, arch, data, "test", p.batch_size)
        quality = {"accuracy": test.acc} if test.acc is not None else {}
        if arch.evaluate is not None and dataset.split_size("test"):
            quality.update(arch.evaluate(module, dataset, "test", model.meta))
        seconds = time.perf_counter() - t0
        path = ctx.workdir / "model.pt"
        meta = step_meta(model, ctx, self.kind, seconds, train_time_s=round(seconds, 3), epochs=p.epochs,
                         history=history, test_loss=test.loss, test_accuracy=test.acc,
                         **{f"test_{k}": v for k, v in quality.items() if k != "accuracy"})
        save_model(module, path, meta)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in quality.items()) or f"loss {test.loss}"
        ctx.log(f"trained {p.epochs} epochs in {seconds:.1f} s; test {shown}")
        return {"model": model.model_copy(update={"path": path, "meta": meta})}

    @staticmethod
    def _evaluate(ctx: Any, module: Any, arch: Any, data: dict[str, np.ndarray], split: str,
                  batch_size: int) -> _Totals:
        import torch

        totals = _Totals()
        if len(data.get(f"x_{split}", ())) == 0:  # the arrays of DatasetHandle.arrays(), by stored name
            return totals
        module.eval()
        with torch.no_grad():
            for batch in arch.make_batches(data, split, batch_size, None):
                ctx.check_cancelled()
                loss, stats = arch.loss(module, batch)
                totals.add(float(loss), stats)
        return totals


class _Totals:
    """Sample-weighted loss and accuracy over batches (accuracy only if every batch counted it).

    Other numbers an architecture's loss returns (e.g. a detector's heat_loss) are averaged the
    same way and reported as extra metrics.
    """

    def __init__(self) -> None:
        self.loss_sum = 0.0
        self.count = 0
        self.correct: int | None = 0
        self.extra_sums: dict[str, float] = {}

    def add(self, loss: float, stats: dict[str, float]) -> None:
        n = int(stats.get("count", 1))
        self.loss_sum += loss * n
        self.count += n
        if self.correct is not None and "correct" in stats:
            self.correct += int(stats["correct"])
        else:
            self.correct = None
        for name, value in stats.items():
            if name not in ("count", "correct") and isinstance(value, int | float):
                self.extra_sums[name] = self.extra_sums.get(name, 0.0) + float(value) * n

    def extras(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}_{k}": v / self.count for k, v in self.extra_sums.items()} if self.count else {}

    @property
    def loss(self) -> float | None:
        return self.loss_sum / self.count if self.count else None

    @property
    def acc(self) -> float | None:
        return self.correct / self.count if self.count and self.correct is not None else None


class TrainKeras(Node):
    """Train a Keras classification model with Adam and sparse cross-entropy on its logits."""

    kind = "train.keras"
    warm_imports = ("heiti.nodes.keras_env:import_keras",)
    title = "Train (Keras)"
    category = "Training"
    Params = TrainParams
    inputs = {"model": In(ModelArtifact, formats={"keras"}),
              "dataset": In(DatasetHandle, formats={"classification"})}
    outputs = {"model": Out(ModelArtifact, same_as="model")}

    def run(self, ctx: Any, model: ModelArtifact, dataset: DatasetHandle) -> dict[str, Any]:
        import numpy as np
        from heiti.nodes.keras_env import import_keras, load_keras

        tf, keras = import_keras()
        t0 = time.perf_counter()
        p = self.params
        keras.utils.set_random_seed(p.seed)
        try:
            tf.config.experimental.enable_op_determinism()
        except Exception:  # noqa: BLE001 - determinism is best effort on exotic builds
            pass
        net = load_keras(model.path, fresh=True)  # trained in place
        to_nhwc = (model.meta.layout or "NHWC") == "NHWC"

        def split(name: str) -> tuple[np.ndarray, np.ndarray]:
            x, y = dataset.load_split(name)
            if y is None:
                raise NodeError(f"the dataset's {name} split has no labels; training needs them")
            x = x.astype(np.float32)
            return (x.transpose(0, 2, 3, 1) if to_nhwc and x.ndim == 4 else x), y

        x_train, y_train = split("train")
        x_val, y_val = split("val")
        x_test, y_test = split("test")
        steps = -(-len(x_train) // p.batch_size)
        lr: Any = p.lr
        if p.schedule == "cosine":
            lr = keras.optimizers.schedules.CosineDecay(p.lr, decay_steps=p.epochs * steps)
        net.compile(optimizer=keras.optimizers.Adam(lr, weight_decay=p.weight_decay or None),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=["accuracy"])
        history: list[dict[str, Any]] = []
        callback = _KerasEvents(ctx, p.epochs, steps, history)
        validation = (x_val, y_val) if len(x_val) else None
        net.fit(x_train, y_train, epochs=p.epochs, batch_size=p.batch_size, shuffle=True,
                validation_data=validation, callbacks=[callback], verbose=0)
        if callback.cancelled:
            raise Cancelled(f"{ctx.node_id}: cancelled")
        test_loss, test_acc = (net.evaluate(x_test, y_test, batch_size=256, verbose=0) if len(x_test) else (None, None))
        seconds = time.perf_counter() - t0
        path = ctx.workdir / "model.keras"
        net.save(path)
        meta = step_meta(model, ctx, self.kind, seconds, train_time_s=round(seconds, 3), epochs=p.epochs,
                         history=history, test_loss=test_loss, test_accuracy=test_acc)
        ctx.log(f"trained {p.epochs} epochs in {seconds:.1f} s; test accuracy {test_acc}")
        return {"model": model.model_copy(update={"path": path, "meta": meta})}


def _keras_callback_base() -> type:
    from heiti.nodes.keras_env import import_keras

    _tf, keras = import_keras()
    return keras.callbacks.Callback


class _KerasEvents:
    """Keras callback (built lazily so keras is not imported at module top): events + cancel."""

    def __new__(cls, ctx: Any, epochs: int, steps: int, history: list[dict[str, Any]]) -> Any:
        base = _keras_callback_base()

        class Events(base):  # type: ignore[misc, valid-type]
            cancelled = False

            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                if ctx.cancelled:
                    self.cancelled = True
                    self.model.stop_training = True
                ctx.progress((self.epoch + (batch + 1) / steps) / epochs, f"epoch {self.epoch + 1}/{epochs}")

            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                self.epoch = epoch

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                logs = logs or {}
                values = {"train_loss": logs.get("loss"), "train_acc": logs.get("accuracy"),
                          "val_loss": logs.get("val_loss"), "val_acc": logs.get("val_accuracy")}
                values = {k: (float(v) if v is not None else None) for k, v in values.items()}
                history.append({"epoch": epoch + 1, **values})
                _epoch_end(ctx, epoch + 1, values)

        return Events()
