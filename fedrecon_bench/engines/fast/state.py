"""engine=fast's typed states: pytrees with named fields (FedJAX's style), so client results
and server state say what they hold instead of dicts with agreed keys.

A client function returns a ClientOut; the executor (execute.py) sums a round's outputs
into one ClientOut (delta weighted by weight, tallies added) and stacks what clients keep.
"""
from __future__ import annotations

from typing import Any, NamedTuple


class ServerState(NamedTuple):
    params: dict        # the global variables, name -> array
    opt: Any            # the server optimizer's state
    round: Any          # rounds run so far (int32 scalar): keys and schedules fold it in
    agg: Any = None     # the aggregator's state (DP: the clip and zeroing threshold); None for a mean
    extra: Any = None   # an algorithm's own server-side state (e.g. several model sets)


class ClientOut(NamedTuple):
    delta: Any = None   # update of the global variables, g_t - g_i (a sparse table: the client's rows)
    weight: Any = None  # the update's weight in the mean (0 when the update is not finite)
    rows: Any = None    # sparse tables: which rows `delta` holds, per sparse field
    tally: Any = None   # metric sums (client.py's tally), added over clients
    agg: Any = None     # the aggregator's per-client tallies (DP: clip and zeroing counts), added
    keep: Any = None    # what the client keeps for later (stored local variables), stacked
