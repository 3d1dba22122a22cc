"""
Offline at once when the Hugging Face Hub cannot be reached.

Without network, a command that names a Hub id waits ~30 s behind eleven lines of huggingface_hub's retries before it
fails (or falls back to the local cache). When the Hub's host name does not resolve at all, there is nothing to wait
for: the command then runs in offline mode (`HF_HUB_OFFLINE=1`: local folders and the local Hugging Face cache only)
and says so in one line. huggingface_hub, transformers and datasets read that variable when they are imported, so this
runs before they are, once per command process; a user's own HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE setting (on or
off) is left as it is.
"""

import os
import socket
import threading
from urllib.parse import urlparse


UNREACHABLE_MARKER = "COCOOP_HF_HUB_UNREACHABLE"  # set to the host name: command_errors words its message with it
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
DEFAULT_ENDPOINT = "https://huggingface.co"
RESOLVE_TIMEOUT_S = 3.0


def host_does_not_resolve(host: str, resolve=socket.getaddrinfo, timeout: float = RESOLVE_TIMEOUT_S) -> bool:
    """True only when resolving `host` fails outright; a slow answer (timeout) or a resolved name is False: then the
    libraries' own retries decide, as without this check."""
    outcome = {}

    def attempt():
        try:
            resolve(host, 443)
            outcome["resolved"] = True
        except OSError:  # socket.gaierror: no such name, no DNS server
            outcome["resolved"] = False

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout)
    return outcome.get("resolved") is False


def work_offline_if_hub_unreachable(environ=None, resolve=socket.getaddrinfo) -> str | None:
    """Set offline mode in `environ` (default: os.environ) when the Hub's host does not resolve; returns the note to
    show, or None when nothing was changed (the user chose, or the host resolves)."""
    environ = os.environ if environ is None else environ
    if any(name in environ for name in OFFLINE_VARIABLES):
        return None
    host = urlparse(environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).hostname
    if not host or not host_does_not_resolve(host, resolve):
        return None
    environ["HF_HUB_OFFLINE"] = "1"
    environ[UNREACHABLE_MARKER] = host
    return (
        f"note: the Hugging Face Hub ({host}) cannot be reached from here: working offline (local folders and the "
        "local Hugging Face cache only); set HF_HUB_OFFLINE=0 to try the network anyway."
    )
