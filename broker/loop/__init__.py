"""Closing the loop: acknowledgements, statutory clocks and escalations.

``calendar`` turns durations into due times (working hours, bank holidays,
school days); ``clocks`` holds open clocks as a replayable state machine.
"""
