import os
import socket

# huggingface_hub reads HF_ENDPOINT once, at import: point it at loopback before
# anything imports huggingface_hub or diffusers, so no test can reach the real Hub.
# The port is a free one picked now; tests/hub_server.py's Hub serves on it (the
# `hub_server` fixture) and until then nothing listens there.
with socket.socket() as _probe:
    _probe.bind(("127.0.0.1", 0))
    HUB_PORT = _probe.getsockname()[1]
os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{HUB_PORT}"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DIFFUSERS_NO_ADVISORY_WARNINGS", "1")
# Uploads are "regular" (base64 in the commit): no Xet/LFS transfer is ever needed.
os.environ["HF_HUB_DISABLE_XET"] = "1"

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def hub_server():
    """A local stand-in for the Hub (tests/hub_server.py) at HF_ENDPOINT, for the whole session."""
    from hub_server import HubServer

    server = HubServer(port=HUB_PORT).start()
    yield server
    server.stop()


@pytest.fixture
def hub(hub_server, tmp_path, monkeypatch):
    """The Hub, emptied, with no ambient token: not HF_TOKEN, not a login cache (a test sets them itself)."""
    import huggingface_hub.constants

    hub_server.start()  # in case a test stopped it
    hub_server.reset()
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-login" / "token"))
    yield hub_server
    hub_server.start()
