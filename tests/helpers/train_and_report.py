"""Run scripts/train.py's main() and write what this rank saw to $TRAIN_REPORT_DIR/rank-N.json.

Launched by the training tests through `accelerate launch`, so each rank reports for itself.
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

script = Path(__file__).resolve().parents[2] / "scripts" / "train.py"
spec = importlib.util.spec_from_file_location("train_script", script)
train = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train)

result = train.main(sys.argv[1:])
report_dir = Path(os.environ["TRAIN_REPORT_DIR"])
report_dir.mkdir(parents=True, exist_ok=True)
(report_dir / f"rank-{result['process_index']}.json").write_text(json.dumps(result))
