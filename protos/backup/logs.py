"""Log line formats of the server and the agent: text for people, JSON for collectors.

Either way a line that concerns a session carries its id: log calls pass
`extra={"session_id": ...}`, and `SessionIdFilter` gives the other records an empty one.
Lines about one computer's command or job (a job that failed, a computer that did not
receive a command) also pass the `FIELDS` they know, which the JSON form carries as keys.
"""

import argparse
import json
import logging
import time

LOG_FORMATS = ("text", "json")
# Record attributes (from `extra=`) that the JSON form carries as fields when set.
FIELDS = ("policy_id", "computer", "address", "job_id", "code")


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message`, then `[session ID]` when the message does not say it."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        session_id = getattr(record, "session_id", "")
        if not session_id or session_id in record.getMessage():
            return line
        return f"{line} [session {session_id}]"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and session_id when set."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        session_id = getattr(record, "session_id", "")
        if session_id:
            entry["session_id"] = session_id
        for field in FIELDS:
            value = getattr(record, field, "")
            if value:
                entry[field] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def add_log_format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text lines for people, or one JSON object per line (default text)",
    )
