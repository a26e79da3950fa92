"""The pure decision core: samples in, forecasts, verdicts and plans out.

Nothing in this package reads files, the network or the clock: time is passed in, so every
decision can be reproduced by replaying samples (``memoryguard replay``).
"""
