"""Secret masking and line assembly for step output.

Output is masked a whole line at a time: a partial line is held back until its newline arrives
(or the step ends, or it grows past the chunk limit), so a secret split across two writes or two
reads is still seen whole. Multi-line secret values are masked line by line. Values shorter than
MIN_SECRET_LENGTH are not masked: masking "a" or "on" would destroy every log while hiding nothing.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Mapping

from app.workflow.commands import mask_value

SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|KEY|CREDENTIAL", re.IGNORECASE)
MIN_SECRET_LENGTH = 4
MASK = "***"
MAX_VALUE_PIECE = 64 * 1024
ADD_MASK = "::add-mask::"
# Up to this many values, a chunk is first searched for each value with `in` (a C substring
# search, about 4 GB/s here) and the regex runs only on a chunk that holds one; the alternation
# regex scans at about 0.2 GB/s whatever it finds, which was most of the CPU of a 100 MB log.
_SCAN_VALUES = 16
# The characters str.splitlines() ends a line at, besides "\n" (which no value contains).
_LINE_BREAKS = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def is_secret_name(name: str) -> bool:
    return SECRET_NAME.search(name) is not None


def secret_names(variables: Mapping[str, str]) -> frozenset[str]:
    return frozenset(name for name in variables if is_secret_name(name))


def masked_variables(variables: Mapping[str, str]) -> dict[str, str]:
    """Variables as every API response shows them: secret values replaced by ***."""
    return {k: (MASK if is_secret_name(k) and v else v) for k, v in variables.items()}


class Masker:
    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: set[str] = set()
        # Compiled on first use after a change (_regex): every build's masker gets its own
        # runtime token, and compiling the alternation (~0.3 ms for one token) ran on the
        # event loop at every job start, also for output that never needs it.
        self._pattern: re.Pattern[str] | None = None
        # True once a value holds a line break other than "\n": then a match could span two
        # of the lines mask_line sees, and whole-chunk masking would not be the same.
        self._breaks = False
        for value in values:
            self.add(value)

    def add(self, value: str) -> None:
        new: set[str] = set()
        for line in value.split("\n"):
            line = line.strip("\r")
            # A secret with surrounding whitespace also leaks its core once a shell word-splits
            # it (`echo $SECRET`): mask the stripped core too, unless it is trivially short.
            for candidate in (line, line.strip()):
                # A longer value is masked as consecutive pieces (each still a secret's part):
                # an endless line holds back the longest value, and a megabyte one made every
                # read of a long line rescan it (seconds of event-loop CPU per line).
                for i in range(0, len(candidate), MAX_VALUE_PIECE):
                    piece = candidate[i : i + MAX_VALUE_PIECE]
                    if len(piece) >= MIN_SECRET_LENGTH:
                        new.add(piece)
        if new - self._values:
            self._values |= new
            self._pattern = None
            self._breaks = self._breaks or any(_LINE_BREAKS.search(v) for v in new)

    def _regex(self) -> re.Pattern[str] | None:
        """The values as one pattern, or None when there are none."""
        if self._pattern is None and self._values:
            # Longest first so a secret containing another is replaced whole.
            ordered = sorted(self._values, key=len, reverse=True)
            # Adjacent matches as one mask: a value cut into pieces (MAX_VALUE_PIECE) shows
            # as one *** like any other.
            self._pattern = re.compile("(?:" + "|".join(re.escape(v) for v in ordered) + ")+")
        return self._pattern

    @property
    def longest(self) -> int:
        return max((len(v) for v in self._values), default=0)

    def mask_line(self, line: str) -> str:
        """Mask one line (without or with its newline), honouring `::add-mask::VALUE`."""
        stripped = line.rstrip("\r\n")
        body = stripped.lstrip()
        if body.startswith(ADD_MASK):
            # The value as the command parser reads it (escapes decoded: `%25` is `%`), so
            # what is masked is what the step will print.
            self.add(mask_value(body[len(ADD_MASK) :]))
            return ADD_MASK + MASK + line[len(stripped) :]
        pattern = self._regex()
        if pattern is None:
            return line
        return pattern.sub(MASK, line)

    def safe_cut(self, text: str, cut: int) -> int:
        """Where to release text[:cut] of an endless line so that no secret complete in `text`
        is split: released unmasked up to the cut, its tail would no longer match. A secret
        straddling `cut` moves it to the secret's end (the matches are those mask_text sees)."""
        pattern = self._regex()
        if pattern is None:
            return cut
        whole = ADD_MASK not in text and not self._breaks
        start = 0
        for line in [text] if whole else text.splitlines(keepends=True):
            end = start + len(line)
            if start < cut < end:
                for match in pattern.finditer(line):
                    if start + match.start() >= cut:
                        break
                    if start + match.end() > cut:
                        return start + match.end()
                return cut
            start = end
        return cut

    def mask_text(self, text: str) -> str:
        """The text masked as if each line went through mask_line, whole where that is the same:
        no value holds a newline, so a match never spans two lines, and with no `::add-mask::`
        line and no value holding another line break, one pass over the chunk is exactly the
        line-by-line result (a regex of literals matches at a position the same way whether
        the text after the line's end is there or not)."""
        if ADD_MASK not in text and not self._breaks:
            if not self._values:
                return text
            if len(self._values) <= _SCAN_VALUES and not any(v in text for v in self._values):
                return text
            pattern = self._regex()
            assert pattern is not None
            return pattern.sub(MASK, text)
        return "".join(self.mask_line(line) for line in text.splitlines(keepends=True))


class LineAssembler:
    """Bytes in, complete masked lines out. Invalid UTF-8 becomes U+FFFD, never an error.

    Bytes are decoded with surrogateescape while held so that `held_bytes` is exact: a runner
    that records how far its output is stored must not count the partial line still held here.
    """

    def __init__(self, masker: Masker, max_partial: int) -> None:
        self._masker = masker
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
        self._partial = ""
        self._max_partial = max_partial
        # Inside an `::add-mask::` line longer than max_partial: the rest of the line, up to its
        # newline, is the value (masked from then on) and is never released as output.
        self._in_mask_line = False
        self._mask_value: list[str] = []
        self._mask_size = 0

    @property
    def held_bytes(self) -> int:
        """Raw bytes received but not yet returned (the partial line, a split character)."""
        pending, _ = self._decoder.getstate()
        return len(self._partial.encode("utf-8", "surrogateescape")) + len(pending)

    def _emit(self, text: str) -> str:
        if not text.isascii():  # O(1) in CPython; escaped invalid bytes are never ASCII
            text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return self._masker.mask_text(text)

    def feed(self, data: bytes) -> str:
        text = self._partial + self._decoder.decode(data)
        if self._in_mask_line:
            text = self._absorb(text)
            if self._in_mask_line:
                return ""
        cut = text.rfind("\n") + 1
        if cut == 0 and len(text) < self._max_partial:
            self._partial = text
            return ""
        if cut == 0 and text.lstrip().startswith(ADD_MASK):
            # Released in pieces like any endless line, the value's tail would be stored
            # unmasked: take the whole line as the value instead.
            self._in_mask_line = True
            return self._absorb(text.lstrip()[len(ADD_MASK) :])
        if cut == 0:
            # An endless line (a progress bar): release most of it rather than hold it forever,
            # keeping back enough that a secret straddling the cut is still seen whole later.
            cut = max(1, len(text) - max(0, self._masker.longest - 1))
            cut = self._masker.safe_cut(text, cut)
        self._partial = text[cut:]
        return self._emit(text[:cut])

    def _absorb(self, text: str) -> str:
        """Collect the part of an over-long `::add-mask::` line in `text`; what follows its
        newline is returned for the usual path (empty while the line goes on). What is
        collected is masked at the line's end, or every max_partial characters of a longer one
        (Masker.add cuts a long value into pieces anyway). A possible escape (`%0A`) split by
        the read is held back to be decoded whole."""
        end = text.find("\n")
        if end < 0:
            keep = len(text) - 2 if "%" in text[-2:] else len(text)
            self._mask_value.append(text[:keep])
            self._partial = text[keep:]
            self._mask_size += keep
            if self._mask_size >= self._max_partial:
                self._end_mask_value()
            return ""
        self._mask_value.append(text[:end])
        self._partial, self._in_mask_line = "", False
        self._end_mask_value()
        return text[end + 1 :]

    def _end_mask_value(self) -> None:
        self._masker.add(mask_value("".join(self._mask_value)))
        self._mask_value, self._mask_size = [], 0

    def close(self) -> str:
        text = self._partial + self._decoder.decode(b"", final=True)
        self._partial = ""
        if self._in_mask_line:
            self._in_mask_line = False
            self._mask_value.append(text)
            self._end_mask_value()
            return ""
        return self._emit(text)
