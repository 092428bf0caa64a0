import os

# huggingface_hub reads HF_ENDPOINT once, at import: point it at loopback before
# anything imports huggingface_hub or diffusers, so no test can reach the real Hub.
os.environ.setdefault("HF_ENDPOINT", "http://127.0.0.1:9")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DIFFUSERS_NO_ADVISORY_WARNINGS", "1")
