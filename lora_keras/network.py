"""Is KerasHub's download host reachable? Asked before a download, so offline fails in seconds.

Offline, `GPT2CausalLM.from_preset("gpt2_base_en")` only gives up after kagglehub's retries; one
socket connect to the same host answers the question at once.
"""

import socket
import threading
from urllib.parse import urlsplit

from kagglesdk.kaggle_env import get_endpoint, get_env


def download_host():
    """`(host, port)` of the API kagglehub downloads presets from (`api.kaggle.com:443`)."""
    url = urlsplit(get_endpoint(get_env()))
    return url.hostname, url.port or (443 if url.scheme == "https" else 80)


def pretrained_reachable(timeout=3.0):
    """Whether a TCP connection to KerasHub's download host opens within `timeout` seconds.

    Example:
    ```python
    weights = "pretrained" if lk.pretrained_reachable() else "random"
    ```
    """
    return host_reachable(download_host(), timeout)


def host_reachable(address, timeout=3.0):
    """Whether a TCP connection to `address`, a `(host, port)`, opens within `timeout` seconds."""
    reached = []

    def connect():
        try:
            with socket.create_connection(address, timeout=timeout):
                reached.append(address)
        except OSError:
            pass

    # A name lookup ignores socket timeouts and can hang for long when no DNS server answers;
    # joining a daemon thread bounds the whole check by `timeout`, and ends it on a quick failure.
    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(reached)
