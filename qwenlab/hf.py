"""Checkpoints: read a transformers Qwen2 checkpoint into qwenlab, and hand a model back.

A Hugging Face checkpoint is a folder with ``config.json`` and the weights as safetensors, in
one ``model.safetensors`` or in shards listed by ``model.safetensors.index.json``. Tensor names
are transformers' module paths, which are ours too, so loading is a check and a copy:
- every tensor the model needs must be there with the right shape (a tied LM head is the
  embedding, so a tied checkpoint has no ``lm_head.weight``);
- nothing unexpected may be left over (it would mean a different architecture);
- only safetensors are read: a ``.bin`` checkpoint is a pickle, and unpickling runs code.

Qwen2-MoE checkpoints (``model_type "qwen2_moe"``) come in two layouts, and both load:
``save_pretrained`` writes one tensor per expert (``mlp.experts.{i}.gate_proj.weight``, which
is qwenlab's own layout), while transformers 5 keeps the experts fused in memory, so a
``state_dict()`` saved as is holds ``mlp.experts.gate_up_proj`` (E, 2 * I, C: each expert's
gate rows, then its up rows) and ``mlp.experts.down_proj`` (E, C, I). ``to_transformers``
fuses them again.

``load_pretrained`` also accepts a hub repo id ("Qwen/Qwen2.5-0.5B-Instruct"): when the name
is not a local folder, huggingface_hub downloads the config and safetensors files (nothing
else), which needs network access.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import QwenConfig
from .model import QwenForCausalLM

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot become this model; the message names the file or tensor."""


def resolve_checkpoint(path_or_repo_id: str | Path, revision: str | None = None) -> Path:
    """A local folder as is; anything else is fetched from the hub (config and safetensors)."""
    path = Path(path_or_repo_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{path} is a file; pass the checkpoint folder that holds "
                              "config.json and the .safetensors files")
    repo_id = str(path_or_repo_id)
    if repo_id.count("/") != 1 or repo_id.startswith(("/", ".", "~")):
        raise CheckpointError(f"no checkpoint folder at {path_or_repo_id!r}, and it is not a "
                              "hub repo id of the form 'owner/name'")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, revision=revision,
                                  allow_patterns=["*.json", "*.safetensors"]))


def read_config(folder: Path) -> QwenConfig:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{folder} has no config.json")
    with open(config_file) as f:
        return QwenConfig.from_hf(json.load(f))


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of the checkpoint in ``folder``, from safetensors files only."""
    index_file, single = folder / INDEX_FILE, folder / SINGLE_FILE
    if index_file.is_file():
        with open(index_file) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
    elif single.is_file():
        shards = [SINGLE_FILE]
    else:
        pickles = sorted(p.name for p in folder.glob("*.bin")) + \
            sorted(p.name for p in folder.glob("*.pt"))
        if pickles:
            raise CheckpointError(
                f"{folder} holds only pickled weights ({', '.join(pickles)}); qwenlab reads "
                "safetensors only, because unpickling can run arbitrary code. Convert them with "
                "transformers' save_pretrained(..., safe_serialization=True)")
        raise CheckpointError(f"{folder} has neither {SINGLE_FILE} nor {INDEX_FILE}")
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        shard_path = folder / shard
        if not shard_path.is_file():
            raise CheckpointError(f"{INDEX_FILE} lists {shard}, which is not in {folder}")
        try:
            state.update(load_file(shard_path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"cannot read {shard_path}: it is truncated or not a "
                                  f"safetensors file ({e})") from e
    return state


FUSED_GATE_UP = re.compile(r"^(model\.layers\.\d+\.mlp\.experts)\.gate_up_proj$")
FUSED_DOWN = re.compile(r"^(model\.layers\.\d+\.mlp\.experts)\.down_proj$")


def unfuse_experts(state: dict[str, torch.Tensor], config: QwenConfig) -> dict[str, torch.Tensor]:
    """transformers' fused in-memory expert tensors -> one tensor per expert (other keys kept)."""
    E, C = config.num_experts, config.hidden_size
    I = config.moe_intermediate_size  # noqa: E741  (the paper's name for the intermediate size)
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        if (m := FUSED_GATE_UP.match(name)) and config.is_moe:
            if tuple(t.shape) != (E, 2 * I, C):
                raise CheckpointError(f"{name} has shape {tuple(t.shape)}, the config needs "
                                      f"{(E, 2 * I, C)} (experts, 2 x moe_intermediate_size, "
                                      "hidden_size)")
            for e in range(E):
                out[f"{m[1]}.{e}.gate_proj.weight"] = t[e, :I]
                out[f"{m[1]}.{e}.up_proj.weight"] = t[e, I:]
        elif (m := FUSED_DOWN.match(name)) and config.is_moe:
            if tuple(t.shape) != (E, C, I):
                raise CheckpointError(f"{name} has shape {tuple(t.shape)}, the config needs "
                                      f"{(E, C, I)} (experts, hidden_size, "
                                      "moe_intermediate_size)")
            for e in range(E):
                out[f"{m[1]}.{e}.down_proj.weight"] = t[e]
        else:
            out[name] = t
    return out


def fuse_experts(state: dict[str, torch.Tensor], config: QwenConfig) -> dict[str, torch.Tensor]:
    """One tensor per expert -> transformers' fused ``gate_up_proj`` / ``down_proj``."""
    out = dict(state)
    for i in range(config.num_hidden_layers):
        if not config.is_moe_layer(i):
            continue
        prefix = f"model.layers.{i}.mlp.experts"
        per = [{p: out.pop(f"{prefix}.{e}.{p}_proj.weight") for p in ("gate", "up", "down")}
               for e in range(config.num_experts)]
        out[f"{prefix}.gate_up_proj"] = torch.stack([torch.cat([w["gate"], w["up"]])
                                                     for w in per])   # (E, 2I, C)
        out[f"{prefix}.down_proj"] = torch.stack([w["down"] for w in per])  # (E, C, I)
    return out


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Raise a CheckpointError naming every missing, unexpected or mis-shaped tensor."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        expected.pop("lm_head.weight")
        if "lm_head.weight" in state:  # some exporters write the tied head anyway
            if not torch.equal(state["lm_head.weight"], state.get("model.embed_tokens.weight",
                                                                  torch.empty(0))):
                raise CheckpointError("config.json says tie_word_embeddings=true, but "
                                      "lm_head.weight differs from model.embed_tokens.weight")
            state.pop("lm_head.weight")
    problems = []
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        problems.append(f"missing tensors: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected)}")
    for name in sorted(set(expected) & set(state)):
        if tuple(state[name].shape) != expected[name]:
            problems.append(f"{name} has shape {tuple(state[name].shape)}, the config needs "
                            f"{expected[name]}")
    if problems:
        raise CheckpointError("checkpoint does not match its config: " + "; ".join(problems))


def load_pretrained(path_or_repo_id: str | Path, *, dtype: torch.dtype | None = None,
                    device: torch.device | str = "cpu", attn_backend: str = "auto",
                    revision: str | None = None) -> QwenForCausalLM:
    """A transformers Qwen2 or Qwen2-MoE checkpoint (folder or hub repo id) as a
    ``QwenForCausalLM``.

    dtype: None keeps the dtype the weights were saved in (bf16 for the released Qwen2.5).
    """
    folder = resolve_checkpoint(path_or_repo_id, revision)
    config = read_config(folder).replace(attn_backend=attn_backend)
    state = unfuse_experts(read_state_dict(folder), config)
    with torch.device("meta"):  # no time spent initialising weights that are overwritten
        model = QwenForCausalLM(config)
    check_state_dict(model, state)
    if dtype is not None:
        state = {name: t.to(dtype) for name, t in state.items()}
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    model.model.rotary_emb.reset()  # its tables were created on the meta device
    return model.to(device).eval()


def to_transformers(model: QwenForCausalLM):
    """The same weights as a ``transformers.Qwen2ForCausalLM`` (``Qwen2MoeForCausalLM`` for a
    mixture-of-experts config), in eval mode, with the same dtype and device."""
    from transformers import Qwen2ForCausalLM, Qwen2MoeForCausalLM

    hf_config = model.config.to_hf()
    with torch.device("meta"):
        reference = (Qwen2MoeForCausalLM if model.config.is_moe else Qwen2ForCausalLM)(hf_config)
    state = {name: t.detach().clone() for name, t in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    if model.config.is_moe:
        state = fuse_experts(state, model.config)
    missing, unexpected = reference.load_state_dict(state, strict=False, assign=True)
    missing = [m for m in missing if not (m == "lm_head.weight" and hf_config.tie_word_embeddings)]
    if missing or unexpected:
        raise CheckpointError(f"cannot map to transformers: missing {missing}, "
                              f"unexpected {unexpected}")
    reference.tie_weights()
    rotary = reference.model.rotary_emb
    inv_freq, _ = rotary.compute_default_rope_parameters(hf_config)  # its buffers were on meta
    rotary.inv_freq = inv_freq.to(model.device)
    rotary.original_inv_freq = inv_freq.clone().to(model.device)
    return reference.to(model.device).eval()


def save_pretrained(model: QwenForCausalLM, folder: str | Path) -> Path:
    """Write ``config.json`` and ``model.safetensors`` that transformers and qwenlab both load
    (a mixture of experts with one tensor per expert, as transformers' save_pretrained does).
    ``router_z_loss_coef`` and ``moe_capacity_factor`` are qwenlab's and are not saved."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hf_config = model.config.to_hf()
    hf_config.dtype = str(model.dtype).removeprefix("torch.")
    hf_config.architectures = ["Qwen2MoeForCausalLM" if model.config.is_moe
                               else "Qwen2ForCausalLM"]
    hf_config.to_json_file(folder / "config.json")
    state = {name: t.detach().contiguous().cpu() for name, t in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight")
    save_file(state, folder / SINGLE_FILE, metadata={"format": "pt"})
    return folder
