"""Name-mention scrubbing: mentions of non-consenting participants become stable per-meeting placeholders.

:meth:`NameScrubber.build` (once per roster or consent change) parses each display name into name parts
(``parse``) and expands them into the forms people and transcription engines use (``variants``): every case,
diacritics folded (``folding``), nicknames and spelling variants (``gateway.nicknames``) and edit-distance-1
misspellings. One small byte pattern finds every word that starts like a form; each is confirmed against the
forms, and only then does Python read its context (``context``), because many names are also words ("Bill",
"May", "Grant") or belong to someone else ("Salma Ataullahjan" is not participant Salma Zahid). Recall comes
first: a mention that could be a target is replaced, and only a positive sign of another reading lets it
through. Names in other scripts (``scripts``: "Ольга", "王伟") match exactly after normalisation, and
e-mail addresses (``emails``) are replaced whole before names. Pure: no I/O, no clock; the only memory kept
between calls is bounded memoisation.
"""

from gateway.names.folding import fold
from gateway.names.parse import ParsedName, parse_display_name
from gateway.names.scrubber import NameScrubber, NameTarget
from gateway.names.variants import edit_allowed

__all__ = ["NameScrubber", "NameTarget", "ParsedName", "edit_allowed", "fold", "parse_display_name"]
