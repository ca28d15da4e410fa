"""`calendar-gateway demo`: the whole gateway on embedded defaults against the local Google
emulator, walked through over real HTTP and printed step by step.

    stack.py     start the emulator and the gateway in-process on 127.0.0.1 (scratch folder)
    walk.py      the HTTP side: the agent backend's API calls, the browser, the emulator's
                 control API
    seeding.py   the realistic work week put into the emulator's calendar
    render.py    what a person reads: steps, tables, the busy-time timeline, progress bars
    evidence.py  the byte scan of the database files after disconnect
    runner.py    the steps, in order
    command.py   the command: scratch folder, log file, failure report
"""
