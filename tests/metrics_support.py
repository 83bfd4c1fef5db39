"""Scraping a real /metrics endpoint over HTTP(S) and reading samples out of it."""

import asyncio
import ssl
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from backup.v1 import policy_service_pb2 as api
from backup.v1 import resources_pb2 as pb


def fetch(url: str, context: ssl.SSLContext | None = None) -> str:
    """The body of one scrape; raises urllib's errors as they are."""
    with urllib.request.urlopen(url, timeout=10, context=context) as reply:
        return str(reply.read().decode())


async def scrape(url: str, context: ssl.SSLContext | None = None) -> str:
    """One scrape off the event loop, so the process being scraped keeps running."""
    return await asyncio.to_thread(fetch, url, context)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, by name and label set."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (a counter never incremented)."""
    return samples(text).get((name, frozenset(labels.items())), 0.0)


def client_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """A TLS client trusting our CA, presenting `cert` when given."""
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


async def final_session(stub: Any, session_id: str, seconds: float = 30.0) -> Any:
    """The session once its outcome is final (every job it started has ended)."""
    end = asyncio.get_running_loop().time() + seconds
    while True:
        session = await stub.GetSession(api.GetSessionRequest(session_id=session_id))
        if session.outcome not in (pb.SESSION_STATE_UNSPECIFIED, pb.SESSION_STATE_RUNNING):
            return session
        if asyncio.get_running_loop().time() > end:
            raise AssertionError(f"session {session_id} outcome not final within {seconds} s")
        await asyncio.sleep(0.05)
