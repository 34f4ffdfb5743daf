"""voicegate.server.cli: the ``voicegate`` command line (``main``) and the commands
that exist only as command line.

Modules:
    config_command  ``voicegate config show [--config FILE]``: print the effective configuration
    keys_command    ``voicegate keys create|list|revoke``: the node's API keys
                    (voicegate.server.security.keys)
    main            The `voicegate` command line
    models_command  ``voicegate models synth DIR``, ``voicegate models check DIR``, ``voicegate
                    models import FORMAT SRC OUT`` and ``voicegate models build-default``
    run_demo        What ``make run`` does: start ``voicegate serve`` on a free local port with the
                    real bundle (built from the installed weight packages on first use)
    talk            `voicegate talk`: stream a WAV file to ``/v1/stream`` like a microphone would
    talk_audio      Audio side of `voicegate talk`: where speech ends, wire frames, pacing, the
                    answer
"""
