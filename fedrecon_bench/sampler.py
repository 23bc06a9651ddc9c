"""Which training clients each round samples: clients_per_round of them, uniformly without
replacement, from a generator of the run seed's own (client sampling only). The state
travels in checkpoints, so a resumed run samples what the uninterrupted one would. It
also counts each client's visits: summary.json's `participation` (how often clients come
back, which the stateful algorithms depend on)."""
from __future__ import annotations

import numpy as np


class ClientSampler:
    def __init__(self, seed: int, num_clients: int, per_round: int):
        self.n, self.m = int(num_clients), int(per_round)
        self.rng = np.random.default_rng([seed, 2])
        self.visits = np.zeros(self.n, np.int64)

    def next(self) -> np.ndarray:
        """The next round's client indices."""
        idx = self.rng.choice(self.n, size=self.m, replace=False)
        self.visits[idx] += 1
        return idx

    def participation(self) -> dict:
        """Visits per training client so far: mean and max, and the fraction never sampled."""
        v = self.visits
        return {"mean_visits": float(v.mean()) if v.size else 0.0, "max_visits": int(v.max(initial=0)),
                "never_sampled": float(np.mean(v == 0)) if v.size else 0.0}

    def peek(self) -> np.ndarray:
        """The round after next's clients, without moving (for reading them ahead)."""
        ahead = np.random.default_rng()
        ahead.bit_generator.state = self.rng.bit_generator.state
        return ahead.choice(self.n, size=self.m, replace=False)

    @property
    def state(self) -> dict:
        return self.rng.bit_generator.state

    @state.setter
    def state(self, value: dict) -> None:
        self.rng.bit_generator.state = value
