"""Run scripts/train.py's main() and write what this rank saw to $TRAIN_REPORT_DIR/rank-N.json.

Launched by the training tests through `accelerate launch`, so each rank reports for itself.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from script_modules import load_script  # noqa: E402

train = load_script("train")

result = train.main(sys.argv[1:])
report_dir = Path(os.environ["TRAIN_REPORT_DIR"])
report_dir.mkdir(parents=True, exist_ok=True)
(report_dir / f"rank-{result['process_index']}.json").write_text(json.dumps(result))
