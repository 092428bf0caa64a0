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


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory):
    """A saved DDPMFromScratchPipeline with a tiny random U-Net for 8×8 one-channel images, T = 50."""
    import torch

    from ddpm_from_scratch import DDPMFromScratchPipeline, DDPMFromScratchScheduler, DDPMFromScratchUNet

    torch.manual_seed(0)
    unet = DDPMFromScratchUNet(sample_size=8, in_channels=1, out_channels=1, base_channels=8,
                               channel_multipliers=(1, 2), num_res_blocks=1, attention_levels=(1,), norm_num_groups=4)
    folder = tmp_path_factory.mktemp("tiny") / "pipe"
    DDPMFromScratchPipeline(unet=unet, scheduler=DDPMFromScratchScheduler(num_train_timesteps=50)).save_pretrained(
        folder)
    return folder
