"""Run scripts/train.py's main() and write what this rank saw to $TRAIN_REPORT_DIR/rank-N.json.

Launched by the training tests through `accelerate launch`, so each rank reports for itself. With
$TRAIN_HOLD_UNTIL set, the run waits, holding its output folder's lock, until that file exists.
"""

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from script_modules import load_script  # noqa: E402

train = load_script("train")

hold_file = os.environ.get("TRAIN_HOLD_UNTIL")
if hold_file:
    # Hold the run inside its lock, before training, until the test creates this file: the test then knows the
    # run is alive for as long as it needs, however slowly a second process starts.
    train_after_lock = train.train

    def held_train(args):
        while not Path(hold_file).exists():
            time.sleep(0.05)
        return train_after_lock(args)

    train.train = held_train

result = train.main(sys.argv[1:])
report_dir = Path(os.environ["TRAIN_REPORT_DIR"])
report_dir.mkdir(parents=True, exist_ok=True)
(report_dir / f"rank-{result['process_index']}.json").write_text(json.dumps(result))
