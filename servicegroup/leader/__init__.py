"""Everything only the sweeping leader runs, in one package.

Every daemon runs a Sweeper; the one holding the SQL lease leads:

- lease.py      the lease itself, and the Hold each leader write confirms;
- sweeper.py    the loop: read the fleet, decide, write events, run the rest;
- decision.py   the pure decision: transitions, damping, mass-down protection;
- recovery.py   claims whose owner is gone: revoke, then apply the policy;
- policies.py   `[claims] policies`, parsed once;
- hooks.py      the one hook runner, for event hooks and recovery hooks.

It depends on the rest of servicegroup through narrow interfaces
(sweeper.Fleet, recovery.Leading), not on ServiceGroup itself.
"""
