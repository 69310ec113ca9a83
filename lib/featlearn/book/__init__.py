"""The machinery that turns chapters into a site: run, stage, check, sync, sweep, record.

Why a subpackage: the science modules of :mod:`featlearn` never import it; it reads
what chapters record through :mod:`featlearn.claims`.
"""
