"""Shared fixtures: a tiny random Llama with a locally trained BPE tokenizer, and records.

Nothing is downloaded. The model and tokenizer are saved once per session as safetensors so the
real `load_model(folder)` path runs; `fresh_model()` loads a new copy each call because PiSSA and
OLoRA rewrite base weights in place and every run needs an untouched base.

Fixtures: tokenizer, tiny_model_dir, tiny_config, fresh_model, records, probe_batch, logits_on,
tiny_request, train_tiny (-> TrainedRun), load_adapter, one_torch_thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from whichlora.data.records import Record

# `precision: auto` means bf16 on CPUs with AMX/AVX512-BF16: in tests, here and in the processes
# they start, every CPU counts as without, so a test's runs do not depend on the machine (and
# tiny models, too small for bf16 to pay, stay fast). Tests of that choice set it themselves.
os.environ["WHICHLORA_CPU_BF16"] = "0"

# (language, instruction, output): short, so a 3-step run takes well under a second.
SAMPLES: list[tuple[str, str, str]] = [
    ("en", "Translate 'good morning' into French.", "Bonjour."),
    ("en", "Name a colour of the sky.", "The sky is blue."),
    ("en", "How many legs does a cat have?", "A cat has four legs."),
    ("en", "Say hello to a friend.", "Hello there, my friend!"),
    ("en", "What is the capital of France?", "Paris is the capital of France."),
    ("en", "Give an antonym of 'hot'.", "Cold."),
    ("de", "Wie heißt die Hauptstadt von Deutschland?", "Die Hauptstadt ist Berlin."),
    ("de", "Nenne eine Farbe des Himmels.", "Der Himmel ist blau."),
    ("de", "Wie viele Beine hat eine Katze?", "Eine Katze hat vier Beine."),
    ("de", "Sag Hallo zu einem Freund.", "Hallo, mein Freund!"),
    ("de", "Was trinkt man am Morgen?", "Viele trinken Kaffee."),
    ("fr", "Quelle est la capitale de la France ?", "La capitale est Paris."),
    ("fr", "Nomme une couleur du ciel.", "Le ciel est bleu."),
    ("fr", "Combien de pattes a un chat ?", "Un chat a quatre pattes."),
    ("fr", "Dis bonjour à un ami.", "Bonjour, mon ami !"),
    ("fr", "Que mange-t-on au petit-déjeuner ?", "Du pain et du beurre."),
    ("es", "¿Cuál es la capital de España?", "La capital es Madrid."),
    ("es", "Nombra un color del cielo.", "El cielo es azul."),
    ("es", "¿Cuántas patas tiene un gato?", "Un gato tiene cuatro patas."),
    ("es", "Saluda a un amigo.", "¡Hola, amigo mío!"),
    ("es", "¿Qué bebemos por la mañana?", "Bebemos café con leche."),
    ("ru", "Какая столица России?", "Столица России — Москва."),
    ("ru", "Назови цвет неба.", "Небо голубое."),
    ("ru", "Сколько лап у кошки?", "У кошки четыре лапы."),
    ("ru", "Поздоровайся с другом.", "Привет, мой друг!"),
    ("zh", "中国的首都是哪里？", "中国的首都是北京。"),
    ("zh", "天空是什么颜色？", "天空是蓝色的。"),
    ("zh", "猫有几条腿？", "猫有四条腿。"),
    ("zh", "向朋友问好。", "你好，我的朋友！"),
    ("zh", "早上喝什么？", "早上喝茶。"),
]

CHAT_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<s>", "<|im_start|>", "<|im_end|>"]


def build_tokenizer() -> Any:
    """A byte-level BPE trained on the sample sentences, with a ChatML-like chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [text for _, instruction, output in SAMPLES for text in (instruction, output)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus * 4 + ["user", "assistant", "system"] * 8, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One torch thread for the test, restored after it. Tiny models run several times faster
    on one thread and stop competing for cores. Use with `pytest.mark.usefixtures`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Path:
    """A randomly initialised 2-layer Llama plus tokenizer, saved as safetensors."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(1234)
    model = LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    assert any(folder.glob("*.safetensors"))
    return folder


@pytest.fixture(scope="session")
def tiny_config(tiny_model_dir: Path) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(tiny_model_dir)


@pytest.fixture
def fresh_model(tiny_model_dir: Path) -> Callable[[], Any]:
    """Factory of freshly loaded `LoadedModel`s (untouched base weights every call)."""
    from whichlora.models.loading import load_model

    def load() -> Any:
        return load_model(str(tiny_model_dir))

    return load


@pytest.fixture(scope="session")
def records() -> list[Record]:
    return [
        Record(id=f"s{i:02d}", language=lang, instruction=instruction, output=output)
        for i, (lang, instruction, output) in enumerate(SAMPLES)
    ]


@pytest.fixture
def tiny_request(tiny_model_dir: Path) -> Callable[..., Any]:
    """TrainRequest factory for the tiny model: short, deterministic, single-threaded-friendly."""
    from whichlora.train.loop import TrainRequest

    def make(technique: str = "lora", **overrides: Any) -> TrainRequest:
        values: dict[str, Any] = {
            "model": str(tiny_model_dir),
            "technique": technique,
            "steps": 3,
            "batch_size": 4,
            "learning_rate": 1e-3,
            "warmup_ratio": 0.0,
            "rank": 4,
            "max_length": 64,
        }
        values.update(overrides)
        return TrainRequest(**values)

    return make


def _logits_on(model: Any, batch: dict[str, Any]) -> Any:
    import torch

    model.eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@pytest.fixture(scope="session")
def logits_on() -> Callable[[Any, dict[str, Any]], Any]:
    """logits_on(model, batch): eval-mode logits without gradients."""
    return _logits_on


@pytest.fixture(scope="session")
def probe_batch(tokenizer: Any, records: list[Record]) -> dict[str, Any]:
    """A padded batch of four encoded records, to compare models' logits on."""
    from whichlora.train.batching import collate
    from whichlora.train.prompting import encode_records

    examples = encode_records(tokenizer, records[::7], max_length=64)
    return collate(examples, tokenizer.pad_token_id)


@dataclass
class TrainedRun:
    """What `train_tiny` returns: the log, the trained in-memory model and the output folder.

    `model` is the base model the loop was given: peft injects the adapter into it in place, so
    after the run it computes exactly what the trained PeftModel computes.
    """

    log: dict[str, Any]
    model: Any
    out_dir: Path

    @property
    def adapter_dir(self) -> Path:
        return self.out_dir / "adapter"

    @property
    def losses(self) -> list[float]:
        return [step["loss"] for step in self.log["steps"]]


@pytest.fixture
def train_tiny(
    tmp_path: Path,
    records: list[Record],
    fresh_model: Callable[[], Any],
    tiny_request: Callable[..., Any],
) -> Callable[..., TrainedRun]:
    """train_tiny(technique, run_name=None, **request_overrides) -> TrainedRun on a fresh base."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from whichlora.train.loop import train_adapter

    def run(technique: str = "lora", run_name: str | None = None, **overrides: Any) -> TrainedRun:
        loaded = fresh_model()
        out_dir = tmp_path / (run_name or technique)
        log = train_adapter(tiny_request(technique, **overrides), records, out_dir, loaded=loaded)
        # Guard the in-place assumption: the adapter must live in the model we hold.
        assert any(isinstance(m, BaseTunerLayer) for m in loaded.model.modules())
        return TrainedRun(log=log, model=loaded.model, out_dir=out_dir)

    return run


@pytest.fixture
def load_adapter(fresh_model: Callable[[], Any]) -> Callable[[Path], Any]:
    """Plain `PeftModel.from_pretrained` on an untouched, freshly loaded base."""
    from peft import PeftModel

    def load(adapter_dir: Path) -> Any:
        return PeftModel.from_pretrained(fresh_model().model, adapter_dir)

    return load
