"""The local fine-tuning job: `python -m localml.train_job <job dir>`.

Started (detached) by `LocalTraining.submit_finetune`; reads `<job dir>/spec.json`, reports through
`<job dir>/status.json` (Running with progress -> Completed with the MLflow run id and model URI,
or Failed with a one-line error) and MLflow (params, `train_loss` / `eval_loss` / `learning_rate`
metrics, the merged model + tokenizer as an MLflow transformers model).

What it does, in order:

1. downloads the train / validation JSONL named by the spec's blob URLs (datasets storage
   settings come from the environment, as for the app);
2. trains a byte-level BPE tokenizer (Phi-3 chat tokens and template) on the training contents;
3. builds a randomly initialised tiny `Phi3ForCausalLM` (seeded) and wraps it with LoRA;
4. trains with a plain torch loop: AdamW at `LOCAL_LEARNING_RATE` (the spec's learning rate is
   Phi-3-mini's and far too small for a model that starts from random weights), the spec's
   scheduler, batch size and epochs, `min(max_steps, epochs x batches)` steps, loss on
   assistant tokens only;
5. merges the adapter into the weights and logs model + tokenizer with `mlflow.transformers`.

Deterministic for the same data and settings: everything is seeded and runs single-process on
CPU with a fixed thread count.

SIGTERM (cancel) ends the MLflow run as KILLED and exits without touching status.json: the
canceller writes Canceled (and publishes it).

After writing Completed or Failed, the job publishes its end as Azure ML's RunStatusChanged event
to `LOCAL_JOB_EVENTS_URL` when that is set (`localml.training.publish_status_event`, best effort).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

for _name, _value in (
    ("MLFLOW_DISABLE_TELEMETRY", "true"),
    ("HF_HUB_OFFLINE", "1"),
    ("TRANSFORMERS_OFFLINE", "1"),
    ("TOKENIZERS_PARALLELISM", "false"),
    ("OMP_NUM_THREADS", "1"),
):
    os.environ.setdefault(_name, _value)

import warnings  # noqa: E402

import torch  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import get_scheduler  # noqa: E402

from core.models import BlobRef, FineTuneSpec, JobState  # noqa: E402
from core.settings import Settings  # noqa: E402
from localml.paths import RunPaths  # noqa: E402
from localml.state_files import locked  # noqa: E402
from localml.tiny_phi3 import (  # noqa: E402
    LORA_TARGET_MODULES,
    TRAINED_IN_FULL,
    Example,
    build_model,
    collate,
    encode_conversations,
)
from localml.tokenizer import build_tokenizer, conversation_texts  # noqa: E402
from localml.training import (  # noqa: E402
    JOB_TAG,
    SPEC_FILE,
    publish_status_event,
    read_status,
    write_status,
)
from storage.blob_store import BlobDatasetStore  # noqa: E402
from storage.blob_urls import split_blob_url  # noqa: E402

TORCH_THREADS = 1
LORA_R = 16
LORA_ALPHA = 32
# How many validation conversations the periodic eval scores (a bounded, fixed sample).
EVAL_EXAMPLES = 64
EVAL_BATCH = 16
EVALS_PER_RUN = 5
TRAIN_LOGS_PER_RUN = 30


# peft 0.21 still calls transformers' deprecated `is_gradient_checkpointing` (transformers 5).
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


class Terminated(BaseException):
    """SIGTERM arrived (the job is being canceled)."""


class CanceledByStatus(Exception):
    """status.json says Canceled (a canceller got there first): stop quietly."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line[:500]


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _pip_requirements() -> list[str]:
    """Explicit requirements: left to itself mlflow infers them by importing the model's modules
    (and adds torchvision and friends)."""
    import importlib.metadata as md

    def pin(dist: str) -> str:
        return f"{dist}=={md.version(dist).split('+')[0]}"

    return [pin(d) for d in ("mlflow", "torch", "transformers", "tokenizers", "safetensors")]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8-sig") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                if isinstance(row, dict):
                    rows.append(row)
    return rows


def _download(store: BlobDatasetStore, url: str, dest: Path) -> list[dict[str, Any]]:
    container, name = split_blob_url(url)
    store.download(BlobRef(container=container, name=name), dest)
    return _read_jsonl(dest)


def _batches(examples: Sequence[Example], batch_size: int, seed: int) -> Iterator[list[Example]]:
    """Endless seeded shuffled epochs of batches (the last, short batch of an epoch included)."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(examples), generator=generator).tolist()
        for start in range(0, len(order), batch_size):
            yield [examples[i] for i in order[start : start + batch_size]]


def _evaluate(model: torch.nn.Module, examples: Sequence[Example], pad_id: int) -> float:
    """Mean loss per trained token over `examples`."""
    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), EVAL_BATCH):
            chunk = examples[start : start + EVAL_BATCH]
            batch = collate(chunk, pad_id)
            n = sum(e.trained_tokens for e in chunk)
            total += float(model(**batch).loss) * n
            tokens += n
    model.train()
    return total / max(tokens, 1)


def _experiment_id(paths: RunPaths, name: str) -> str:
    """Get or create the experiment, its artifacts under the run dir (not ./mlruns of the cwd).

    Under a file lock: the first use creates the SQLite schema, which two jobs must not race on.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    paths.mlflow_dir.mkdir(parents=True, exist_ok=True)
    with locked(paths.mlflow_dir / ".init.lock"):
        mlflow.set_tracking_uri(paths.mlflow_uri)
        mlflow.set_registry_uri(paths.mlflow_uri)
        client = mlflow.MlflowClient()
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return str(experiment.experiment_id)
        location = (paths.mlflow_artifacts / name).resolve().as_uri()
        try:
            return str(client.create_experiment(name, artifact_location=location))
        except MlflowException:
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return str(experiment.experiment_id)


class Job:
    def __init__(self, job_dir: Path) -> None:
        self.dir = job_dir.resolve()
        config = json.loads((self.dir / SPEC_FILE).read_text())
        self.spec = FineTuneSpec.model_validate(config["spec"])
        self.paths = RunPaths.at(config["run_dir"])
        self.max_steps = int(config["max_steps"])
        self.learning_rate = float(config["learning_rate"])
        self.seed = int(config.get("seed", 1234))
        self.started = time.monotonic()
        self.run_id: str | None = None

    def status(self, state: JobState, **fields: Any) -> None:
        current = read_status(self.dir) or {}
        if current.get("state") == JobState.CANCELED.value:
            raise CanceledByStatus()
        write_status(self.dir, state, pid=os.getpid(), **fields)

    def progress(
        self, phase: str, step: int, total_steps: int, train_loss: float | None, eval_loss: float | None
    ) -> None:
        self.status(
            JobState.RUNNING,
            run_id=self.run_id,
            progress={
                "phase": phase,
                "step": step,
                "total_steps": total_steps,
                "train_loss": None if train_loss is None else round(train_loss, 4),
                "eval_loss": None if eval_loss is None else round(eval_loss, 4),
            },
        )

    def run(self) -> None:
        import mlflow

        spec = self.spec
        hp = spec.hyperparameters
        self.status(JobState.RUNNING, progress={"step": 0, "total_steps": None, "phase": "preparing"})
        # One thread: the matrices are tiny (hidden 128), so a second thread bought nothing at batch
        # size 1 (300 steps: 1.7 s either way) and, with the host, Azurite or a scoring server busy on
        # the other core, two spinning OpenMP threads were 2-7x slower than one.
        torch.set_num_threads(TORCH_THREADS)
        torch.manual_seed(self.seed)

        _log(f"job {spec.job_name}: downloading data")
        with BlobDatasetStore.from_settings(Settings(BACKEND="local")) as store:
            train_rows = _download(store, spec.training_data, self.dir / "data" / "train.jsonl")
            validation_rows = _download(store, spec.validation_data, self.dir / "data" / "validation.jsonl")

        tokenizer = build_tokenizer(conversation_texts(train_rows))
        tokenizer.save_pretrained(self.dir / "tokenizer")
        train = encode_conversations(tokenizer, train_rows)
        validation = encode_conversations(tokenizer, validation_rows)[:EVAL_EXAMPLES]
        if not train:
            raise ValueError("no trainable conversation in the training data (no assistant turn)")
        pad_id = int(tokenizer.pad_token_id)

        batch_size = hp.per_device_train_batch_size
        batches_per_epoch = math.ceil(len(train) / batch_size)
        total_steps = max(1, min(self.max_steps, hp.num_train_epochs * batches_per_epoch))
        log_every = max(1, total_steps // TRAIN_LOGS_PER_RUN)
        eval_every = max(1, total_steps // EVALS_PER_RUN)
        _log(
            f"{len(train)} train / {len(validation)} validation examples, vocab {len(tokenizer)}, "
            f"{total_steps} steps of batch {batch_size}"
        )

        base = build_model(tokenizer, self.seed)
        # LoRA on every projection Phi-3 fine-tunes (fused qkv, attention out, fused gate/up, down).
        # The base model here is random, not pretrained: its embeddings and output head map tokens
        # to noise, and rank-16 deltas on top of random projections cannot fix that. So the
        # embeddings and lm_head are trained in full next to the adapters (peft's modules_to_save;
        # merge_and_unload puts the trained copies back). Measured on 300 short conversations, 300
        # steps: eval loss 0.22 with them trained, 4.75 with LoRA alone, at the same speed.
        lora = LoraConfig(
            task_type="CAUSAL_LM",
            r=LORA_R,
            lora_alpha=LORA_ALPHA,
            lora_dropout=0.0,
            target_modules=LORA_TARGET_MODULES,
            modules_to_save=TRAINED_IN_FULL,
        )
        model = get_peft_model(base, lora)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total_params = sum(p.numel() for p in model.parameters())

        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=self.learning_rate, weight_decay=0.0
        )
        warmup = max(1, total_steps // 10) if hp.lr_scheduler_type == "constant_with_warmup" else 0
        scheduler = get_scheduler(
            hp.lr_scheduler_type,
            optimizer=optimizer,
            num_warmup_steps=warmup,
            num_training_steps=total_steps,
        )

        _log("model built; opening MLflow")
        experiment_id = _experiment_id(self.paths, spec.output_model_prefix)
        tags = {**spec.tags, JOB_TAG: spec.job_name, "mlflow.runName": spec.job_name}
        with mlflow.start_run(experiment_id=experiment_id, run_name=spec.job_name, tags=tags) as run:
            self.run_id = run.info.run_id
            mlflow.log_params(
                {
                    "requested_base_model": spec.base_model_name,
                    "requested_base_model_version": spec.base_model_version or "latest",
                    "requested_learning_rate": hp.learning_rate,
                    "local_model": "tiny-phi3 (random init)",
                    "learning_rate": self.learning_rate,
                    "lr_scheduler_type": hp.lr_scheduler_type,
                    "warmup_steps": warmup,
                    "num_train_epochs": hp.num_train_epochs,
                    "per_device_train_batch_size": batch_size,
                    "total_steps": total_steps,
                    "max_steps": self.max_steps,
                    "train_examples": len(train),
                    "eval_examples": len(validation),
                    "vocab_size": len(tokenizer),
                    "hidden_size": base.config.hidden_size,
                    "num_hidden_layers": base.config.num_hidden_layers,
                    "num_attention_heads": base.config.num_attention_heads,
                    "intermediate_size": base.config.intermediate_size,
                    "lora_r": LORA_R,
                    "lora_alpha": LORA_ALPHA,
                    "lora_target_modules": ",".join(LORA_TARGET_MODULES),
                    "modules_to_save": ",".join(TRAINED_IN_FULL),
                    "trainable_params": trainable,
                    "total_params": total_params,
                    "seed": self.seed,
                }
            )

            train_started = time.monotonic()
            model.train()
            window: list[float] = []
            last_train = last_eval = None
            if validation:
                last_eval = _evaluate(model, validation, pad_id)
                mlflow.log_metric("eval_loss", last_eval, step=0)
            batches = _batches(train, batch_size, self.seed)
            for step in range(1, total_steps + 1):
                batch = collate(next(batches), pad_id)
                loss = model(**batch).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                window.append(float(loss.detach()))

                if step % log_every == 0 or step == total_steps:
                    last_train = sum(window) / len(window)
                    window.clear()
                    metrics = {"train_loss": last_train, "learning_rate": scheduler.get_last_lr()[0]}
                    if validation and (step % eval_every == 0 or step == total_steps):
                        last_eval = _evaluate(model, validation, pad_id)
                        metrics["eval_loss"] = last_eval
                    mlflow.log_metrics(metrics, step=step)
                    self.progress("training", step, total_steps, last_train, last_eval)
            train_s = time.monotonic() - train_started
            mlflow.log_metric("train_runtime_s", train_s)
            _log(f"trained {total_steps} steps in {train_s:.1f} s: train_loss {last_train}, eval {last_eval}")

            self.progress("logging model", total_steps, total_steps, last_train, last_eval)
            merged = model.merge_and_unload()
            merged.eval()
            log_started = time.monotonic()
            info = mlflow.transformers.log_model(
                transformers_model={"model": merged, "tokenizer": tokenizer},
                name="model",
                task="text-generation",
                pip_requirements=_pip_requirements(),
                metadata={"job_name": spec.job_name, "local_model": "tiny-phi3"},
            )
            _log(f"logged model {info.model_uri} in {time.monotonic() - log_started:.1f} s")

        self.status(
            JobState.COMPLETED,
            run_id=self.run_id,
            model_uri=info.model_uri,
            experiment_id=experiment_id,
            progress={
                "phase": "done",
                "step": total_steps,
                "total_steps": total_steps,
                "train_loss": None if last_train is None else round(last_train, 4),
                "eval_loss": None if last_eval is None else round(last_eval, 4),
            },
            train_runtime_s=round(train_s, 2),
            total_runtime_s=round(time.monotonic() - self.started, 2),
        )
        _log(f"completed in {time.monotonic() - self.started:.1f} s")


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m localml.train_job <job dir>", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    job_dir = Path(argv[0])
    job: Job | None = None
    try:
        job = Job(job_dir)
        if (read_status(job.dir) or {}).get("state") == JobState.CANCELED.value:
            return 0
        job.run()
    except (Terminated, CanceledByStatus):
        _end_mlflow_run(job, "KILLED")
        _log("canceled")
        return 143
    except BaseException as exc:
        traceback.print_exc()
        _end_mlflow_run(job, "FAILED")
        failed = False
        with contextlib.suppress(Exception):
            current = read_status(job_dir) or {}
            if current.get("state") != JobState.CANCELED.value:
                write_status(job_dir, JobState.FAILED, error=_one_line(exc), pid=os.getpid())
                failed = True
        if failed:
            _publish(job_dir, JobState.FAILED)
        return 1
    _publish(job_dir, JobState.COMPLETED)
    return 0


def _publish(job_dir: Path, state: JobState) -> None:
    """Publish the job's end (never fails the job: the run's fallback poll finds it anyway)."""
    try:
        settings = Settings(BACKEND="local")
    except Exception as exc:  # the settings themselves may be why the job failed
        _log(f"not publishing the {state.value} event: settings unreadable ({type(exc).__name__})")
        return
    if settings.LOCAL_JOB_EVENTS_URL:
        published = publish_status_event(settings, job_dir, state)
        _log(f"{state.value} event {'published' if published else 'not delivered (see above)'}")


def _end_mlflow_run(job: Job | None, status: str) -> None:
    """Mark the job's MLflow run `status` (leaving `with start_run()` already ended it as FAILED)."""
    run_id = getattr(job, "run_id", None)
    if job is None or run_id is None:
        return
    with contextlib.suppress(Exception):
        import mlflow

        if mlflow.active_run() is not None:
            mlflow.end_run(status=status)
        mlflow.MlflowClient(tracking_uri=job.paths.mlflow_uri).set_terminated(run_id, status=status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
