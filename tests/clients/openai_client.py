"""Drives stolid's /v1/chat/completions with the official `openai` Python client.

Usage: openai_client.py BASE_URL API_KEY QUESTION
Prints one JSON object: the plain and the streamed answers, and the citations
each carried in the extra field ordinary clients ignore.
"""
import json
import sys

from openai import OpenAI

base_url, api_key, question = sys.argv[1:4]
client = OpenAI(base_url=base_url, api_key=api_key)

plain = client.chat.completions.create(
    model="stolid",
    messages=[{"role": "system", "content": "ignored"}, {"role": "user", "content": question}],
)
streamed_text, stream_citations, finish = "", None, None
for chunk in client.chat.completions.create(
    model="stolid", messages=[{"role": "user", "content": question}], stream=True
):
    if chunk.choices:
        streamed_text += chunk.choices[0].delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
    extra = getattr(chunk, "model_extra", None) or {}
    if extra.get("citations") is not None:
        stream_citations = extra["citations"]

print(json.dumps({
    "answer": plain.choices[0].message.content,
    "finish_reason": plain.choices[0].finish_reason,
    "usage": {"prompt": plain.usage.prompt_tokens, "completion": plain.usage.completion_tokens},
    "citations": (plain.model_extra or {}).get("citations"),
    "streamed": streamed_text,
    "stream_finish_reason": finish,
    "stream_citations": stream_citations,
}))
