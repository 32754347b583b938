"""The teacher: synthesises the conversations the SFT warm start trains on. Not training.

``draw`` holds the ``Teacher`` (draws a conversation of a kind picked by the mixture), the
table of every kind's drawer and the kinds over the world's train questions; ``drills`` the
drills over fresh pictures and synthetic results; ``turns`` the assistant turns, as pure
functions; ``config`` the mixture and its knobs (light: no images, for the CLI's help);
``world_kit`` what the teacher reads from a built world and its index. Every conversation is
rendered with the real protocol and seeded. Not here: tokenising and training on them
(``mmsr.train.sft``). Importing this package loads nothing.
"""
