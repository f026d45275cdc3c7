"""Regex filters that cannot blow up: a checked subset of PostgreSQL's regular expressions.

``filter_regex_dict`` values go to PostgreSQL's ``~``. Its engine runs patterns without
backreferences as automata (time linear in the text), but a backreference makes it
backtrack (minutes of CPU for a short pattern: every extra group multiplied the time by
2.3 in a probe), and counted repetitions are unrolled into states, so nested counts grow
multiplicatively. So a pattern is admitted only if

* it is at most ``max_regex_length`` characters (``MATENGINE_MAX_REGEX_LENGTH``, 256),
* it has no backreference (``\\1``…), lookaround (``(?=``, ``(?!``, ``(?<=``), embedded
  options or ``***`` director: plain groups and ``(?:…)`` only,
* every counted repetition ``{m}``, ``{m,}``, ``{m,n}`` has bounds <= 100, no quantifier
  follows another (``a{1000}{1000}``), and the product of counted bounds nested inside one
  another, summed over the pattern, stays <= 1000 (the states PostgreSQL unrolls),
* brackets and parentheses balance, and escapes are the usual ones (``\\d \\w \\s``, their
  capitals, ``\\m \\M \\y \\Y \\A \\Z``, ``\\n \\t \\r \\f \\v`` and escaped punctuation).

Anything else is refused with :class:`InvalidInput` before any SQL runs. The statement
timeout (``MATENGINE_QUERY_TIMEOUT``) stays the backstop for what still runs long.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from matengine.errors import InvalidInput

MAX_REPEAT = 100
MAX_UNROLLED = 1000
MAX_DEPTH = 20
_ESCAPES = set("dDsSwWmMyYAZntrfv")
_QUANT = set("*+?{")


@dataclass
class _Group:
    cost: int = 0  # states unrolled inside the group so far
    last_atom: int | None = None  # cost of the atom a quantifier would apply to
    after_quantifier: bool = False
    parts: list[int] = field(default_factory=list)


def _refuse(pattern: str, why: str, where: str) -> InvalidInput:
    shown = pattern if len(pattern) <= 80 else pattern[:77] + "..."
    return InvalidInput(f"regex {shown!r} refused: {why}", field=where)


def _bracket_end(p: str, i: int) -> int:
    """Index just past the bracket expression starting at ``p[i] == '['``, or -1."""
    j = i + 1
    if j < len(p) and p[j] == "^":
        j += 1
    if j < len(p) and p[j] == "]":
        j += 1
    while j < len(p):
        if p[j] == "[" and j + 1 < len(p) and p[j + 1] in ":.=":
            close = p.find(p[j + 1] + "]", j + 2)
            if close < 0:
                return -1
            j = close + 2
            continue
        if p[j] == "\\":
            j += 2
            continue
        if p[j] == "]":
            return j + 1
        j += 1
    return -1


def _bound(p: str, i: int) -> tuple[int, int] | None:
    """(upper bound, index past '}') of a ``{m}``, ``{m,}``, ``{m,n}`` at ``p[i] == '{'``."""
    close = p.find("}", i)
    if close < 0:
        return None
    body = p[i + 1 : close]
    lo, comma, hi = body.partition(",")
    if not lo.isascii() or not lo.isdigit() or (hi and (not hi.isascii() or not hi.isdigit())):
        return None
    m = int(lo)
    n = int(hi) if hi else (m if not comma else MAX_REPEAT)
    if m > n:
        return None
    if m > MAX_REPEAT or n > MAX_REPEAT:
        return (MAX_REPEAT + 1, close + 1)
    return (max(n, 1), close + 1)


def check_regex(pattern: str, *, max_length: int, where: str) -> str:
    """``pattern`` if it is in the safe subset, else :class:`InvalidInput` naming why."""
    if len(pattern) > max_length:
        raise _refuse(pattern, f"longer than {max_length} characters", where)
    if pattern.startswith("***"):
        raise _refuse(pattern, "'***' directors are not allowed", where)
    stack = [_Group()]
    i = 0
    while i < len(pattern):
        c = pattern[i]
        top = stack[-1]
        if c in _QUANT:
            if top.last_atom is None:
                raise _refuse(pattern, f"quantifier {c!r} at {i} has nothing to repeat", where)
            if top.after_quantifier and not (c == "?" and pattern[i - 1] in "*+?}"):
                raise _refuse(pattern, f"a quantifier follows another at {i}", where)
            if c == "{":
                bound = _bound(pattern, i)
                if bound is None:
                    raise _refuse(pattern, f"'{{' at {i} is not a repetition {{m}}, {{m,}} or {{m,n}}", where)
                n, i = bound
                if n > MAX_REPEAT:
                    raise _refuse(pattern, f"repetition counts above {MAX_REPEAT}", where)
                top.cost += top.last_atom * (n - 1)
            else:
                if top.after_quantifier:  # the non-greedy '?' after a quantifier
                    top.last_atom = None
                i += 1
            top.after_quantifier = True
            if top.cost > MAX_UNROLLED:
                raise _refuse(pattern, f"nested repetitions unroll to more than {MAX_UNROLLED} states", where)
            continue
        top.after_quantifier = False
        if c == "\\":
            if i + 1 >= len(pattern):
                raise _refuse(pattern, "ends with '\\'", where)
            e = pattern[i + 1]
            if e.isdigit():
                raise _refuse(pattern, "backreferences (\\1 …) are not allowed", where)
            if e.isalnum() and e not in _ESCAPES:
                raise _refuse(pattern, f"unknown escape '\\{e}'", where)
            top.last_atom = 1
            top.cost += 1
            i += 2
        elif c == "[":
            end = _bracket_end(pattern, i)
            if end < 0:
                raise _refuse(pattern, f"'[' at {i} is never closed", where)
            top.last_atom = 1
            top.cost += 1
            i = end
        elif c == "(":
            if pattern.startswith("(?", i):
                if not pattern.startswith("(?:", i):
                    raise _refuse(
                        pattern, "only plain groups and (?:…) are allowed (no lookaround, no options)", where
                    )
                i += 1
            if len(stack) > MAX_DEPTH:
                raise _refuse(pattern, f"groups nested deeper than {MAX_DEPTH}", where)
            stack.append(_Group())
            i += 1
        elif c == ")":
            if len(stack) == 1:
                raise _refuse(pattern, f"')' at {i} closes no group", where)
            done = stack.pop()
            inner = max(sum(done.parts) + done.cost, 1)
            parent = stack[-1]
            parent.last_atom = inner
            parent.cost += inner
            i += 1
        elif c == "|":
            top.parts.append(top.cost)
            top.cost = 0
            top.last_atom = None
            i += 1
        elif c in "^$":
            top.last_atom = None
            i += 1
        else:
            top.last_atom = 1
            top.cost += 1
            i += 1
        if sum(g.cost for g in stack) + sum(sum(g.parts) for g in stack) > MAX_UNROLLED:
            raise _refuse(pattern, f"repetitions unroll to more than {MAX_UNROLLED} states", where)
    if len(stack) > 1:
        raise _refuse(pattern, "a '(' is never closed", where)
    return pattern
