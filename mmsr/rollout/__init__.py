"""The multi-turn rollout engine and the trajectories it produces."""

from mmsr.rollout.engine import RolloutEngine, RolloutLimits, RolloutTask, TurnEncoder
from mmsr.rollout.failures import ToolFailures, call_tool
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
    "trajectory_record",
    "write_trajectories",
]
