"""The ``qwenlab`` command: a learner's tools outside the notebooks.

    qwenlab doctor                       versions, devices, data, and what SCALE will do
    qwenlab kv-cache --model qwen2.5-72b --context 131072 --batch 1 --dtype bf16
    qwenlab chat --model PATH_OR_REPO    chat with a checkpoint, tokens streamed as they come
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from . import env
from .config import PRESETS, QwenConfig
from .kv_cache import as_dtype, kv_cache_bytes

GPU_SIZES_GB = (16, 24, 80)


# ---------------------------------------------------------------------------------- doctor
def doctor(args: argparse.Namespace) -> int:
    scale = env.detect_scale()
    what = ("bigger models and longer runs; chapter 05 can load the real Qwen2.5 weights"
            if scale == "gpu" else "tiny models and short runs, about a minute per chapter")
    data = Path(__file__).resolve().parent.parent / "data" / "prepared"
    prepared = sorted(p.name for p in data.iterdir()) if data.is_dir() else []
    status = (f"prepared: {', '.join(prepared)}" if prepared else
              "no real corpora prepared (chapters 00-06 need none; `make data` adds them)")
    env.print_environment({"SCALE does": what, "data": status})
    return 0


# ---------------------------------------------------------------------------------- kv-cache
def model_bytes(config: QwenConfig, dtype: torch.dtype) -> int:
    """Bytes of the weights: parameters counted on the meta device (nothing is allocated)."""
    from .model import QwenForCausalLM

    with torch.device("meta"):
        params = QwenForCausalLM(config).num_parameters()
    return params * torch.empty((), dtype=dtype).element_size()


def kv_cache_table(model: str, context: int, batch: int, dtype: str) -> str:
    config = QwenConfig.preset(model)
    torch_dtype = as_dtype(dtype)
    cache = kv_cache_bytes(config, batch, context, torch_dtype)
    mha = kv_cache_bytes(config.replace(num_key_value_heads=config.num_attention_heads),
                         batch, context, torch_dtype)
    weights = model_bytes(config, torch_dtype)
    per_token = kv_cache_bytes(config, 1, 1, torch_dtype)
    gib = 2**30
    rows = [
        ("model", f"{model} ({config.num_hidden_layers} layers, {config.num_attention_heads} "
                  f"query heads, {config.num_key_value_heads} KV heads, head_dim "
                  f"{config.head_dim})"),
        ("context x batch", f"{context:,} tokens x {batch}"),
        ("dtype", str(torch_dtype).removeprefix("torch.")),
        ("KV per token", f"{per_token:,} bytes = 2 x {config.num_hidden_layers} x "
                         f"{config.num_key_value_heads} x {config.head_dim} x "
                         f"{torch_dtype.itemsize}"),
        ("KV cache", f"{cache:,} bytes = {cache / gib:.2f} GiB"),
        ("same with MHA", f"{mha / gib:.2f} GiB ({config.num_key_value_groups}x: GQA keeps "
                          f"1/{config.num_key_value_groups})"),
        ("weights", f"{weights / gib:.2f} GiB"),
        ("weights + KV", f"{(weights + cache) / gib:.2f} GiB"),
    ]
    for size in GPU_SIZES_GB:
        fits = weights + cache <= size * 1e9
        rows.append((f"fits {size} GB GPU", "yes" if fits else "no"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def kv_cache(args: argparse.Namespace) -> int:
    print(kv_cache_table(args.model, args.context, args.batch, args.dtype))
    return 0


# ---------------------------------------------------------------------------------- chat
def load_chat_tokenizer(folder: Path | None):
    """The checkpoint's own tokenizer when it ships one, else the Qwen2.5 tokenizer."""
    if folder is not None and (folder / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(folder)
    from .tokenizer import load_qwen25_tokenizer

    return load_qwen25_tokenizer()


def stream_reply(model, tokenizer, messages, max_new_tokens: int, temperature: float,
                 top_p: float | None, out=sys.stdout, seed: int | None = None) -> str:
    """Generate the assistant's reply to ``messages``, writing text to ``out`` as it comes."""
    from .generate import generate

    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("this tokenizer has no chat template; chat needs one (ChatML for Qwen)")
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)["input_ids"]
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    new_ids: list[int] = []
    shown = ""

    def on_token(tokens: torch.Tensor) -> None:
        nonlocal shown
        token = int(tokens[0])
        if token == eos:
            return
        new_ids.append(token)
        text = tokenizer.decode(new_ids, skip_special_tokens=True)
        if not text.endswith("\ufffd"):  # wait until a multi-byte character is complete
            out.write(text[len(shown):])
            out.flush()
            shown = text

    generate(model, prompt.to(model.device), max_new_tokens, temperature=temperature,
             top_p=top_p, eos_token_id=eos, on_token=on_token, seed=seed)
    out.write("\n")
    return tokenizer.decode(new_ids, skip_special_tokens=True)


def chat(args: argparse.Namespace) -> int:
    from .hf import load_pretrained, resolve_checkpoint

    folder = resolve_checkpoint(args.model)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_pretrained(folder, device=device,
                            dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    tokenizer = load_chat_tokenizer(folder)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"chatting with {args.model} on {device}; an empty line or Ctrl-D ends")
    for line in sys.stdin:
        text = line.strip()
        if not text:
            break
        messages.append({"role": "user", "content": text})
        if interactive:
            print("assistant: ", end="", flush=True)
        reply = stream_reply(model, tokenizer, messages, args.max_new_tokens, args.temperature,
                             args.top_p, seed=args.seed)
        messages.append({"role": "assistant", "content": reply})
    return 0


# ---------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qwenlab", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("doctor", help="versions, devices, data and SCALE")

    kv = commands.add_parser("kv-cache", help="KV-cache memory of a Qwen2.5 size")
    kv.add_argument("--model", default="qwen2.5-7b", choices=PRESETS)
    kv.add_argument("--context", type=int, default=32768, help="tokens per sequence")
    kv.add_argument("--batch", type=int, default=1)
    kv.add_argument("--dtype", default="bf16", help="bf16, fp16, fp32, fp8 or int8")

    ch = commands.add_parser("chat", help="chat with a checkpoint (folder or hub repo id)")
    ch.add_argument("--model", required=True, help="checkpoint folder or hub repo id")
    ch.add_argument("--system", default=None, help="system prompt (default: the template's)")
    ch.add_argument("--max-new-tokens", type=int, default=256)
    ch.add_argument("--temperature", type=float, default=0.7, help="0 = greedy")
    ch.add_argument("--top-p", type=float, default=0.8)
    ch.add_argument("--seed", type=int, default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"doctor": doctor, "kv-cache": kv_cache, "chat": chat}[args.command]
    try:
        return handler(args)
    except (ValueError, RuntimeError, OSError) as e:
        print(f"qwenlab {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
