"""mmsr on an unforked veRL cluster: the protocol as a veRL agent loop, the
reward as veRL's custom ``compute_score``, and the launch of ``verl.trainer.main_ppo``.

Only ``agent_loop`` and ``launch`` import verl (the optional extra ``mmsr[verl]``); ``episode``
(the loop's verl-free core) and ``reward`` do not, so they are usable and tested without it.
Importing this package imports nothing heavy.
"""
