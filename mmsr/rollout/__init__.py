"""The multi-turn rollout engine, the pure step it shares with the veRL agent loop (``step``),
the protocol rules it applies, the limits and reward settings every entry point reads
(``settings``) and the trajectories it produces."""

from mmsr.rollout.engine import RolloutEngine, RolloutTask, TurnEncoder
from mmsr.rollout.failures import ToolFailures, call_tool
from mmsr.rollout.rules import RolloutLimits, end_reason, fits, search_tool, turn_action
from mmsr.rollout.trajectory import (
    EndReason,
    ToolCall,
    Trajectory,
    trajectory_record,
    write_trajectories,
)

__all__ = [
    "EndReason",
    "RolloutEngine",
    "RolloutLimits",
    "RolloutTask",
    "ToolCall",
    "ToolFailures",
    "Trajectory",
    "TurnEncoder",
    "call_tool",
    "end_reason",
    "fits",
    "search_tool",
    "trajectory_record",
    "turn_action",
    "write_trajectories",
]
