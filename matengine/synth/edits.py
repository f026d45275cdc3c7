"""Synthetic agglomeration and proofreading history.

Supervoxels are grouped into initial roots of random size; then ``edits`` merges and
splits happen at strictly increasing random microsecond timestamps within
``(start, start + span]``. A merge joins two random roots; a split moves a random proper
subset of a random root into a new root. Root ids come from one counter, so they are
never reused.
"""

from __future__ import annotations

import numpy as np

from matengine.segmentation.local_format import MERGE, SPLIT, EditLog, make_root_id


def initial_agglomeration(
    svids: np.ndarray, roots: int, n_layers: int, rng: np.random.Generator
) -> np.ndarray:
    """(N, 2) uint64 [supervoxel, root] with ``roots`` roots of random sizes."""
    n = len(svids)
    roots = max(1, min(roots, n))
    # roots-1 distinct cut points in a shuffled order -> random group sizes, none empty.
    cuts: np.ndarray | list[int] = (
        np.sort(rng.choice(np.arange(1, n), roots - 1, replace=False)) if roots > 1 else []
    )
    group = np.zeros(n, np.int64)
    if roots > 1:
        group[cuts] = 1
        group = np.cumsum(group)
    shuffled = rng.permutation(svids)
    root_ids = make_root_id(n_layers, group.astype(np.uint64) + np.uint64(1))
    return np.stack([shuffled, root_ids], axis=1).astype(np.uint64)


def _timestamps(count: int, start_us: int, span_us: int, rng: np.random.Generator) -> np.ndarray:
    if count > span_us:
        raise ValueError(f"{count} edits do not fit in a span of {span_us} µs")
    picked = np.unique(rng.integers(1, span_us + 1, size=count))
    while len(picked) < count:  # rare collisions: top up until distinct
        more = rng.integers(1, span_us + 1, size=count - len(picked))
        picked = np.unique(np.concatenate([picked, more]))
    return start_us + np.sort(picked[:count])


def generate_edits(
    initial: np.ndarray, count: int, start_us: int, span_us: int, n_layers: int, rng: np.random.Generator
) -> EditLog:
    if count == 0:
        return EditLog.empty()
    members: dict[int, np.ndarray] = {}
    order = np.argsort(initial[:, 1], kind="stable")
    rs = initial[order, 1]
    cuts = np.flatnonzero(rs[1:] != rs[:-1]) + 1
    for part in np.split(order, cuts):
        members[int(initial[part[0], 1])] = initial[part, 0]
    live = list(members)  # current roots; swap-remove keeps removal O(1)
    where = {r: i for i, r in enumerate(live)}
    next_segment = int(initial[:, 1].max() & np.uint64((1 << 56) - 1)) + 1

    def remove(r: int) -> np.ndarray:
        i = where.pop(r)
        last = live.pop()
        if last != r:
            live[i] = last
            where[last] = i
        return members.pop(r)

    def add(r: int, svs: np.ndarray) -> None:
        where[r] = len(live)
        live.append(r)
        members[r] = svs

    ts = _timestamps(count, start_us, span_us, rng)
    kind = np.zeros(count, np.uint8)
    sv_a = np.zeros(count, np.uint64)
    sv_b = np.zeros(count, np.uint64)
    new_a = np.zeros(count, np.uint64)
    new_b = np.zeros(count, np.uint64)
    split_sets: list[np.ndarray] = []
    for i in range(count):
        do_split = rng.random() < 0.5 or len(live) < 2
        target = None
        if do_split:
            for _ in range(20):
                cand = live[int(rng.integers(len(live)))]
                if len(members[cand]) >= 2:
                    target = cand
                    break
        if target is not None:
            svs = members[target]
            k = int(rng.integers(1, len(svs)))
            perm = rng.permutation(len(svs))
            moved, kept = svs[perm[:k]], svs[perm[k:]]
            remove(target)
            a = int(make_root_id(n_layers, next_segment))
            b = int(make_root_id(n_layers, next_segment + 1))
            next_segment += 2
            add(a, moved)
            add(b, kept)
            kind[i], sv_a[i], sv_b[i], new_a[i], new_b[i] = SPLIT, moved[0], kept[0], a, b
            split_sets.append(np.sort(moved))
        elif len(live) >= 2:
            pick = rng.choice(len(live), 2, replace=False)
            ra, rb = live[int(pick[0])], live[int(pick[1])]
            ma, mb = remove(ra), remove(rb)
            a = int(make_root_id(n_layers, next_segment))
            next_segment += 1
            add(a, np.concatenate([ma, mb]))
            kind[i] = MERGE
            sv_a[i] = ma[int(rng.integers(len(ma)))]
            sv_b[i] = mb[int(rng.integers(len(mb)))]
            new_a[i] = a
            split_sets.append(np.zeros(0, np.uint64))
        else:
            raise ValueError("cannot edit a graph with a single one-supervoxel root")
    offsets = np.zeros(count + 1, np.int64)
    offsets[1:] = np.cumsum([len(s) for s in split_sets])
    return EditLog(
        timestamp_us=ts.astype(np.int64),
        operation_id=np.arange(1, count + 1, dtype=np.uint64),
        kind=kind,
        sv_a=sv_a,
        sv_b=sv_b,
        new_root_a=new_a,
        new_root_b=new_b,
        split_offsets=offsets,
        split_svs=np.concatenate(split_sets).astype(np.uint64) if split_sets else np.zeros(0, np.uint64),
    )
