"""Pretraining: teach a QwenForCausalLM to predict the next token of a token stream.

The loop every base model goes through, at toy scale:

    ids = random window of the stream            (B, T) token ids
    loss = model(ids, labels=ids).loss           mean next-token cross-entropy
    loss.backward()
    clip the global gradient norm to grad_clip   one rare bad batch cannot wreck the weights
    lr = cosine_lr(step, ...)                    linear warmup, then a cosine decay to min_lr
    AdamW step (weight decay on matrices only)

What this module chooses, and why:
- Data is one long 1-D stream of token ids: documents tokenized and joined with an
  end-of-text token between them (``tokenize_texts``). Training windows are drawn at random
  offsets from a seeded ``torch.Generator`` (``random_batches``); held-out loss is measured on
  fixed, sequential windows (``sequential_batches``), so every evaluation sees the same tokens.
- The loss is computed in chunks (``return_logits=False``): the (B, T, V) logits are never
  held for the backward pass, which is faster on a CPU and far lighter on memory.
- The learning rate warms up linearly (AdamW's second-moment estimates are noise in the first
  steps; a full-size step then can throw the model into a bad region), then follows a cosine to
  ``min_lr`` (Loshchilov & Hutter, 2017; the Chinchilla and Qwen reports train this way).
- Gradients are clipped by their *global* norm over all parameters, which rescales the update
  without changing its direction.
- Everything random is seeded, and a checkpoint stores everything the next step depends on:
  weights, AdamW's moments, the step, the batch sampler's and torch's RNG states, the configs
  and the history. Resuming from it gives bit-for-bit the loss an uninterrupted run gives.
- Checkpoints are safetensors files (tensors plus a JSON metadata string; nothing is pickled,
  so loading one cannot run code). Each is written to a temporary file in the same folder,
  read back and checked against a SHA-256 of its tensors, and only then renamed into place:
  a crash mid-write, or a truncated or corrupt file, never replaces the last good checkpoint,
  and loading a damaged one fails with an error that names the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import QwenConfig
from .model import QwenForCausalLM

__all__ = ["CheckpointError", "History", "TrainConfig", "cosine_lr", "evaluate",
           "latest_checkpoint", "load_checkpoint", "make_optimizer", "random_batches",
           "save_checkpoint", "sequential_batches", "tokenize_texts", "train"]

FORMAT = "qwenlab-train-v1"
CHECKPOINT_PATTERN = re.compile(r"^ckpt_(\d+)\.safetensors$")


# --------------------------------------------------------------------------- schedule

def cosine_lr(step: int, max_steps: int, warmup: int, lr: float, min_lr: float) -> float:
    """The learning rate for optimizer step ``step`` (counted from 0).

    Warmup: ``lr * (step + 1) / warmup`` for ``step < warmup``, rising linearly to ``lr``
    (the first step is not wasted at 0). Then a half cosine from ``lr`` at ``step == warmup`` to
    ``min_lr`` at ``step == max_steps``:
    ``min_lr + (lr - min_lr) * (1 + cos(pi * (step - warmup) / (max_steps - warmup))) / 2``,
    and ``min_lr`` after ``max_steps``.
    """
    if step < warmup:
        return lr * (step + 1) / warmup
    if step >= max_steps:
        return min_lr
    progress = (step - warmup) / (max_steps - warmup)       # 0 -> 1 over the decay
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------- data

def tokenize_texts(texts: Iterable[str], tokenizer, eos_token_id: int | None = None
                   ) -> torch.Tensor:
    """Tokenize documents into one 1-D stream of ids, an end-of-text token after each document.

    The separator tells the model where one document ends and an unrelated one begins, so it
    learns not to carry context across it. ``eos_token_id`` defaults to the tokenizer's.
    """
    eos = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos_token_id; pass eos_token_id= (the id that "
                         "separates documents, e.g. <|endoftext|>)")
    texts = list(texts)
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    stream: list[int] = []
    for ids in encoded:
        stream.extend(ids)
        stream.append(eos)
    return torch.tensor(stream, dtype=torch.long)


def _check_stream(stream: torch.Tensor, seq_len: int) -> None:
    if stream.dim() != 1:
        raise ValueError(f"expected a 1-D stream of token ids, got shape {tuple(stream.shape)}")
    if len(stream) < seq_len:
        raise ValueError(f"the stream has {len(stream)} tokens, fewer than one window of "
                         f"seq_len={seq_len}")


def random_batches(stream: torch.Tensor, batch_size: int, seq_len: int,
                   generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless (B, T) batches of windows starting at random offsets, drawn from ``generator``.

    The model's loss shifts the labels itself, so a window of T tokens gives T - 1 predictions.
    """
    _check_stream(stream, seq_len)
    offsets = torch.arange(seq_len)                                         # (T,)
    while True:
        starts = torch.randint(0, len(stream) - seq_len + 1, (batch_size,), generator=generator)
        yield stream[starts[:, None] + offsets]                             # (B, T)


def sequential_batches(stream: torch.Tensor, batch_size: int, seq_len: int,
                       max_batches: int | None = None) -> list[torch.Tensor]:
    """Non-overlapping (B, T) windows from the start of the stream, in order (the tail that
    does not fill a window, or a whole batch, is left out): a fixed evaluation set."""
    _check_stream(stream, seq_len)
    n_windows = len(stream) // seq_len
    windows = stream[:n_windows * seq_len].view(n_windows, seq_len)         # (N, T)
    batches = [windows[i:i + batch_size] for i in range(0, n_windows - batch_size + 1,
                                                         batch_size)]
    if not batches:
        raise ValueError(f"the stream has {n_windows} windows of {seq_len} tokens, fewer than "
                         f"one batch of {batch_size}")
    return batches[:max_batches]


@torch.no_grad()
def evaluate(model: QwenForCausalLM, batches: list[torch.Tensor]) -> float:
    """Mean next-token loss over the batches (each weighted by its number of predictions):
    the cross-entropy alone, without an MoE model's load-balancing term."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for ids in batches:
        ids = ids.to(model.device)
        n = ids.shape[0] * (ids.shape[1] - 1)
        out = model(ids, labels=ids, return_logits=False, output_router_logits=False)
        total += out.loss.item() * n
        count += n
    model.train(was_training)
    return total / count


# --------------------------------------------------------------------------- configuration

class LRSchedule:
    """What every training config of the course shares (pretraining, SFT, reward model, DPO):
    ``max_steps``, ``batch_size``, ``warmup_steps``, ``lr`` and ``min_lr``, checked when the
    config is made, and the learning rate of each step (``cosine_lr``)."""

    def __post_init__(self) -> None:
        if self.max_steps <= 0 or self.batch_size <= 0:
            raise ValueError("max_steps and batch_size must be positive")
        if not 0 <= self.warmup_steps < self.max_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be in [0, max_steps = "
                             f"{self.max_steps})")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) is larger than lr ({self.lr})")

    def lr_at(self, step: int) -> float:
        return cosine_lr(step, self.max_steps, self.warmup_steps, self.lr, self.min_lr)


def optimizer_step(optimizer: torch.optim.Optimizer, params: list[torch.Tensor],
                   loss: torch.Tensor, lr: float, grad_clip: float | None) -> None:
    """One update: set the learning rate, backpropagate ``loss``, scale all gradients by
    ``min(1, grad_clip / global norm)`` (when ``grad_clip``), step."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()


@dataclass
class TrainConfig(LRSchedule):
    """The knobs of a pretraining run. Every token count is ``batch_size * seq_len`` per step."""
    max_steps: int = 200
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 20
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0           # max global gradient norm; 0 or None turns clipping off
    eval_every: int = 50             # steps between held-out evaluations (and at the end)
    eval_batches: int = 4            # held-out batches per evaluation
    checkpoint_every: int = 0        # steps between checkpoints (0: only at the end or stop)
    keep_checkpoints: int = 2        # how many recent checkpoint files to keep
    seed: int = 0                    # seeds the batch sampler (seed the model's init yourself)

    def __post_init__(self) -> None:
        if self.max_steps <= 0 or self.batch_size <= 0 or self.seq_len < 2:
            raise ValueError("max_steps and batch_size must be positive and seq_len at least 2")
        super().__post_init__()

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len


# Fields that may change between an interrupted run and its resumption without changing
# what the next steps compute (how often to evaluate or save).
_RESUMABLE_CHANGES = {"eval_every", "eval_batches", "checkpoint_every", "keep_checkpoints"}


@dataclass
class History:
    """What a run measured, for plotting: one row per optimizer step, one per evaluation."""
    step: list[int] = field(default_factory=list)          # steps completed (1, 2, ...)
    lr: list[float] = field(default_factory=list)          # learning rate of that step
    train_loss: list[float] = field(default_factory=list)  # loss of that step's batch
    tokens: list[int] = field(default_factory=list)        # tokens seen after that step
    eval_step: list[int] = field(default_factory=list)
    eval_tokens: list[int] = field(default_factory=list)
    eval_loss: list[float] = field(default_factory=list)   # held-out loss at eval_step

    @property
    def final_eval_loss(self) -> float | None:
        return self.eval_loss[-1] if self.eval_loss else None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> History:
        return cls(**d)


# --------------------------------------------------------------------------- optimizer

def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices (projections, embeddings) only.

    Norm gains and biases are not decayed: pulling a gain towards 0 fights the normalisation
    it scales. A tied LM head is one tensor and is listed once.
    """
    params = list(dict.fromkeys(p for p in model.parameters() if p.requires_grad))
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8)


# --------------------------------------------------------------------------- checkpoints

class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, truncated, corrupt or from another run."""


def _model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers, each shared tensor once (a tied head is stored as
    ``model.embed_tokens.weight`` only, as in a transformers checkpoint)."""
    seen, tensors = set(), {}
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), t.shape, t.dtype)
        if t.numel() and key in seen:
            continue
        seen.add(key)
        tensors[name] = t
    return tensors


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of the tensors, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _checkpoint_path(folder: Path, step: int) -> Path:
    return folder / f"ckpt_{step:06d}.safetensors"


def save_checkpoint(folder: str | os.PathLike, model: QwenForCausalLM,
                    optimizer: torch.optim.Optimizer, step: int, cfg: TrainConfig,
                    history: History, generator: torch.Generator) -> Path:
    """Write ``folder/ckpt_{step:06d}.safetensors`` atomically; return its path.

    The file is written to a temporary name in the same folder, flushed to disk, read back and
    verified, and only then renamed (``os.replace`` is atomic within a file system). Older
    checkpoints beyond ``cfg.keep_checkpoints`` are removed after the new one is in place.
    """

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous()
               for k, v in _model_tensors(model).items()}
    opt_state = optimizer.state_dict()
    for idx, state in opt_state["state"].items():
        for k, v in state.items():
            tensors[f"optim.{idx}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.batches"] = generator.get_state()
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    groups = [{k: v for k, v in g.items()} for g in opt_state["param_groups"]]
    meta = {"format": FORMAT, "step": step, "train_config": dataclasses.asdict(cfg),
            "model_config": dataclasses.asdict(model.config), "history": history.to_dict(),
            "param_groups": groups, "sha256": _digest(tensors)}
    final = _checkpoint_path(folder, step)
    write_safetensors(tensors, final, {"qwenlab": json.dumps(meta)}, verify=_read_checkpoint)
    _prune(folder, cfg.keep_checkpoints)
    return final


def write_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str],
                      verify=None) -> None:
    """Write ``path`` atomically: to a temporary name in the same folder, flushed to disk,
    checked with ``verify(tmp_path)`` when given (a bad write raises before the rename), then
    renamed (``os.replace`` is atomic within a file system). A reader never sees half a file."""
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if verify is not None:
            verify(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _prune(folder: Path, keep: int) -> None:
    paths = sorted(_checkpoint_files(folder))
    for path in paths[:-keep] if keep > 0 else []:
        path.unlink()


def _checkpoint_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if CHECKPOINT_PATTERN.match(p.name)]


def _read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of a checkpoint, verified; CheckpointError naming the file if not."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("qwenlab")
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt and cannot be read "
                              f"({type(e).__name__}: {e}); resume from an earlier checkpoint "
                              "or delete this file") from e
    if raw is None:
        raise CheckpointError(f"checkpoint {path} has no qwenlab metadata: it was not written "
                              "by qwenlab.train.save_checkpoint")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"checkpoint {path} has corrupt metadata ({e})") from e
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {meta.get('format')!r}, "
                              f"expected {FORMAT!r}")
    if _digest(tensors) != meta.get("sha256"):
        raise CheckpointError(f"checkpoint {path} is corrupt: its tensors do not match the "
                              "SHA-256 recorded when it was written; resume from an earlier "
                              "checkpoint or delete this file")
    return tensors, meta


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The newest checkpoint in ``folder`` that reads back intact (newer damaged ones are
    skipped with a warning that names them), or None when there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    for path in sorted(_checkpoint_files(folder), reverse=True):
        try:
            _read_checkpoint(path)
        except CheckpointError as e:
            warnings.warn(f"skipping a damaged checkpoint: {e}", stacklevel=2)
            continue
        return path
    return None


def load_checkpoint(path: str | os.PathLike, model: QwenForCausalLM | None = None,
                    optimizer: torch.optim.Optimizer | None = None,
                    generator: torch.Generator | None = None) -> dict:
    """Restore a checkpoint into ``model`` (built from the stored config when None), the
    optimizer and the batch generator, and torch's global RNG. Returns a dict with ``model``,
    ``step``, ``train_config``, ``history`` and ``model_config``."""
    tensors, meta = _read_checkpoint(path)
    model_config = QwenConfig(**meta["model_config"])
    if model is None:
        model = QwenForCausalLM(model_config)
    elif dataclasses.asdict(model.config) != meta["model_config"]:
        ours, theirs = dataclasses.asdict(model.config), meta["model_config"]
        diff = {k: (ours[k], theirs[k]) for k in ours if ours[k] != theirs.get(k)}
        raise CheckpointError(f"checkpoint {path} was written for another model config: "
                              f"(this model, checkpoint) differ in {diff}")
    weights = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise CheckpointError(f"checkpoint {path} does not fit the model: missing "
                              f"{sorted(set(missing) - tied)}, unexpected {sorted(unexpected)}")
    model.tie_weights()
    if optimizer is not None:
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, idx, name = key.split(".", 2)
                state.setdefault(int(idx), {})[name] = value
        groups = meta["param_groups"]
        for g in groups:
            if "betas" in g:
                g["betas"] = tuple(g["betas"])
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    torch.set_rng_state(tensors["rng.torch"])
    if generator is not None:
        generator.set_state(tensors["rng.batches"])
    if torch.cuda.is_available():
        cuda_states = [tensors[f"rng.cuda.{i}"] for i in range(torch.cuda.device_count())
                       if f"rng.cuda.{i}" in tensors]
        if cuda_states:
            torch.cuda.set_rng_state_all(cuda_states)
    return {"model": model, "step": meta["step"], "model_config": model_config,
            "train_config": TrainConfig(**meta["train_config"]),
            "history": History.from_dict(meta["history"])}


# --------------------------------------------------------------------------- the loop

def train(model: QwenForCausalLM, train_stream: torch.Tensor, cfg: TrainConfig,
          eval_stream: torch.Tensor | None = None, checkpoint_dir: str | os.PathLike | None = None,
          resume: bool = True, stop_at: int | None = None, progress: bool = True,
          desc: str = "train") -> History:
    """Train ``model`` on random windows of ``train_stream`` for ``cfg.max_steps`` steps.

    eval_stream: held-out token ids; its first ``cfg.eval_batches`` sequential batches are
        evaluated every ``cfg.eval_every`` steps and at the end.
    checkpoint_dir: where checkpoints go (every ``cfg.checkpoint_every`` steps, and when the
        run ends or stops). With ``resume=True`` the run continues from the newest intact
        checkpoint there, and the returned history includes the steps before it.
    stop_at: stop after this many steps, as if interrupted (the schedule still spans
        ``max_steps``); a later call with the same arguments resumes.
    progress: show a tqdm progress bar with the latest losses.
    """
    from tqdm.auto import tqdm

    device = model.device
    params = list(dict.fromkeys(p for p in model.parameters() if p.requires_grad))
    optimizer = make_optimizer(model, cfg)
    generator = torch.Generator().manual_seed(cfg.seed)
    history, step = History(), 0
    if checkpoint_dir is not None and resume:
        path = latest_checkpoint(checkpoint_dir)
        if path is not None:
            _check_resumable(path, cfg)
            restored = load_checkpoint(path, model, optimizer, generator)
            step, history = restored["step"], restored["history"]
    eval_set = (sequential_batches(eval_stream, cfg.batch_size, cfg.seq_len, cfg.eval_batches)
                if eval_stream is not None else None)
    batches = random_batches(train_stream, cfg.batch_size, cfg.seq_len, generator)
    end = cfg.max_steps if stop_at is None else min(stop_at, cfg.max_steps)

    model.train()
    bar = tqdm(total=cfg.max_steps, initial=step, desc=desc, disable=not progress,
               dynamic_ncols=True)
    postfix: dict[str, str] = {}
    while step < end:
        lr = cfg.lr_at(step)
        ids = next(batches).to(device)                               # (B, T)
        loss = model(ids, labels=ids, return_logits=False).loss
        optimizer_step(optimizer, params, loss, lr, cfg.grad_clip)
        step += 1

        history.step.append(step)
        history.lr.append(lr)
        history.train_loss.append(loss.item())
        history.tokens.append(step * cfg.tokens_per_step)
        postfix["loss"] = f"{history.train_loss[-1]:.3f}"
        if eval_set is not None and (step % cfg.eval_every == 0 or step == cfg.max_steps):
            history.eval_step.append(step)
            history.eval_tokens.append(step * cfg.tokens_per_step)
            history.eval_loss.append(evaluate(model, eval_set))
            postfix["eval"] = f"{history.eval_loss[-1]:.3f}"
        bar.set_postfix(postfix, refresh=False)
        bar.update(1)
        if checkpoint_dir is not None and (
                step == end or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0)):
            save_checkpoint(checkpoint_dir, model, optimizer, step, cfg, history, generator)
    bar.close()
    return history


def _check_resumable(path: Path, cfg: TrainConfig) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:   # already verified by latest_checkpoint
        saved = json.loads(f.metadata()["qwenlab"])["train_config"]
    ours = dataclasses.asdict(cfg)
    changed = {k: (saved.get(k), v) for k, v in ours.items()
               if k not in _RESUMABLE_CHANGES and saved.get(k) != v}
    if changed:
        raise CheckpointError(
            f"checkpoint {path} was written by a run with another TrainConfig; (checkpoint, "
            f"now) differ in {changed}. Resume with the same settings, or use another "
            "checkpoint_dir (or resume=False) to start afresh")
