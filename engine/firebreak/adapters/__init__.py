"""Edges of Firebreak: files, Kafka, Faust, the terminal. Thin by design.

Every path from input to records goes through one drive loop (drive.py: a source → an
engine, Python or native → a sink of records and refused input): file replay, topic
replay, backtest, investigations, the demo and the rule tests; the live worker (live/)
feeds the same engines in batches. The package owns reading rule files (rule_files.py,
starter_pack.py), the commands built on the loop (file_replay, topic_replay, backtest with
backtest_report, investigation, demo, rule_tests, traffic_check) and delivery to people
(notify.py). The meaning of a record stays in firebreak.records; the detection in the core.
"""
