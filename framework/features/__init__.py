"""The built-in features of ``aicc compile``, each a plugin that declares its options (flags,
Python keywords, config-file keys: ``aicc_add_options``) and turns them into passes and backend
options (``aicc_configure``). A third-party feature is the same: one module listed in a plugins
file (see ``tests/plugins/shout_feature.py`` for a flag and its pass in one file).
"""
