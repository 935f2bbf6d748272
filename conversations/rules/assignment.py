"""Who gets the next conversation: round robin or least busy, within capacity.

Pure: the caller loads the agents (their load, capacity and last turn) under
a lock and writes back what this decides.
"""

from dataclasses import dataclass

ROUND_ROBIN = "round_robin"
LEAST_BUSY = "least_busy"


@dataclass
class Seat:
    """One agent as auto-assignment sees them for one team."""

    agent_id: int
    # Open and pending conversations the agent holds now.
    load: int
    capacity: int
    # The turn counter of the agent's last assignment (0: never).
    last_turn: int

    @property
    def has_room(self) -> bool:
        return self.load < self.capacity


def pick(seats: list[Seat], mode: str) -> Seat | None:
    """The seat that takes the next conversation, or None when all are full.

    Round robin: the agent whose last turn is oldest, so every agent with
    room takes one before anyone takes a second. Least busy: the agent with
    the fewest conversations, the oldest turn breaking ties.
    """
    free = [seat for seat in seats if seat.has_room]
    if not free:
        return None
    if mode == LEAST_BUSY:
        return min(free, key=lambda seat: (seat.load, seat.last_turn, seat.agent_id))
    return min(free, key=lambda seat: (seat.last_turn, seat.agent_id))


def take(seat: Seat, turn: int) -> None:
    """Record that the seat took a conversation on this turn."""
    seat.load += 1
    seat.last_turn = turn
