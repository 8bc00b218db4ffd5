"""Turn records into token ids with labels on the response only.

The prompt goes through the model's chat template when it has one, so training sees what
inference sees. The response is what the template adds after the prompt (including its end-of-turn
marker), so the model learns to stop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from whichlora.data.records import Record

IGNORE_INDEX = -100
PLAIN_PROMPT = "### Instruction:\n{user}\n\n### Response:\n"


@dataclass(frozen=True)
class EncodedExample:
    input_ids: list[int]
    labels: list[int]
    response_tokens: int = 0  # response tokens left after truncation

    @property
    def length(self) -> int:
        return len(self.input_ids)


def user_message(record: Record) -> str:
    return f"{record.instruction}\n\n{record.input}" if record.input else record.instruction


def format_prompt(tokenizer: Any, text: str) -> str:
    """The text a model sees before it answers."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
    return PLAIN_PROMPT.format(user=text)


def split_prompt_response(tokenizer: Any, record: Record) -> tuple[str, str]:
    prompt = format_prompt(tokenizer, user_message(record))
    if getattr(tokenizer, "chat_template", None):
        full = tokenizer.apply_chat_template(
            [
                {"role": "user", "content": user_message(record)},
                {"role": "assistant", "content": record.output},
            ],
            tokenize=False,
        )
        if full.startswith(prompt):
            return prompt, full[len(prompt) :].rstrip("\n")
    return prompt, record.output + (tokenizer.eos_token or "")


def encode_record(
    tokenizer: Any, record: Record, max_length: int, response_only: bool = True
) -> EncodedExample:
    prompt, response = split_prompt_response(tokenizer, record)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if tokenizer.bos_token_id is not None and not getattr(tokenizer, "chat_template", None):
        prompt_ids = [tokenizer.bos_token_id, *prompt_ids]
    ids = (prompt_ids + response_ids)[:max_length]
    labels = (
        [IGNORE_INDEX] * len(prompt_ids) if response_only else list(prompt_ids)
    ) + response_ids
    return EncodedExample(
        input_ids=ids,
        labels=labels[:max_length],
        response_tokens=max(0, len(ids) - len(prompt_ids)),
    )


def encode_records(
    tokenizer: Any, records: list[Record], max_length: int, response_only: bool = True
) -> list[EncodedExample]:
    """Encode and drop examples whose response was cut away entirely (nothing to learn).

    Decided on the response, not the labels: with loss on the full sequence a prompt-only example
    still has labels, but it would teach the model to go on prompting instead of answering.
    """
    encoded = [encode_record(tokenizer, r, max_length, response_only) for r in records]
    return [e for e in encoded if e.response_tokens > 0]
