"""A pure Python tool: word statistics of a text (the Python twin of
text-stats). Built into a component by componentize-py with every WASI
import stubbed (see README.md): it logs through airlock:tool/log, not print."""

import json
from collections import Counter

import wit_world
from componentize_py_types import Err
from wit_world.imports import log
from wit_world.imports.airlock_tool_types import ToolError_InvalidInput


class WitWorld(wit_world.WitWorld):
    def invoke(self, input: str) -> str:
        args = json.loads(input)
        text = args.get("text")
        if not isinstance(text, str):
            raise Err(ToolError_InvalidInput("`text` must be a string"))
        top = args.get("top", 3)
        if not isinstance(top, int) or top < 0 or top > 100:
            raise Err(ToolError_InvalidInput("`top` must be a whole number from 0 to 100"))
        words = [w.lower() for w in text.split()]
        log.log(log.Level.INFO, f"counted {len(words)} words")
        ranked = sorted(Counter(words).items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        return json.dumps({
            "words": len(words),
            "lines": len(text.splitlines()),
            "top_words": [{"word": w, "count": c} for w, c in ranked],
        })
