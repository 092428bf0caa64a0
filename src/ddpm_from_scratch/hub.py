"""Model cards: the repo's `model_card.md` template filled in with a run's facts."""

from __future__ import annotations

import string
from typing import Any, Mapping


def render_model_card(template: str, facts: Mapping[str, Any]) -> str:
    """Substitute ``$name`` / ``${name}`` placeholders in `template` with `facts`.

    A placeholder with no fact is an error naming it, so a card never ships with a
    hole in it; ``$$`` writes a literal dollar sign.
    """
    try:
        return string.Template(template).substitute({k: str(v) for k, v in facts.items()})
    except KeyError as missing:
        raise ValueError(f"the model card template needs the fact {missing.args[0]!r}, which was not given.") from None
