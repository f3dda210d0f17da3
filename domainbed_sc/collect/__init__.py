"""The collector: run records -> model selection -> tables and plots (``domainbed-sc collect``).

``reader`` loads every results.jsonl under some directories into one DataFrame (one row per
checkpoint record) and reports what it had to skip; ``selection`` picks a checkpoint per run
and a hyperparameter draw per grid cell, by one of the methods registered in ``methods``;
``tables`` aggregates and formats; ``plots`` draws.
"""
