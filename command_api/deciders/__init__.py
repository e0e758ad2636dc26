"""Pure deciders: ``decide(command, state) -> events`` and ``evolve(state, event) -> state``."""
