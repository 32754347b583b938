"""mmsr on an unforked veRL cluster: the protocol as a veRL agent loop, the
reward as veRL's custom ``compute_score``, and the launch of ``verl.trainer.main_ppo``.

``agent_loop``, ``fixes`` (veRL fixes every run loads), ``cpu`` (veRL's trainer on the CPU) and
``cpu_rollout`` (its rollout server) import verl (the optional extra ``mmsr[verl]``), and
``launch`` does when it composes or starts a run; ``episode`` (the loop's verl-free core),
``reward`` and ``processor`` do not, so they are usable and tested without it. Importing this
package imports nothing heavy.
"""
