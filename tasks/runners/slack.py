"""Posts a message to a Slack incoming webhook (sent and classified by ``http.send``).

Slack answers 200 with the body ``ok``; its errors are 4xx (``invalid_payload``,
``no_service``, ...: permanent) or 429 and 5xx (transient).
"""

from __future__ import annotations

from typing import Any

from tasks.runners import base, http

OPTIONAL_KEYS = ("channel", "username", "icon_emoji", "blocks")


def run(ctx: base.RunContext) -> Any:
    webhook_url = ctx.require("webhook_url")
    text = ctx.config.get("text")
    if text is None or text == "":
        raise base.RunnerError("runner_config.text is required", permanent=True)
    message: dict[str, Any] = {"text": text if isinstance(text, str) else str(text)}
    for key in OPTIONAL_KEYS:
        if ctx.config.get(key) not in (None, ""):
            message[key] = ctx.config[key]
    return http.send(
        "POST", webhook_url, body=message, timeout_s=base.timeout_s(ctx, http.DEFAULT_TIMEOUT_S)
    )
