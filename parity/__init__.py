"""The parity library (layer d): metrics and the one gate (``parity.compare``), every
tolerance (``parity.tolerances``), cases as rows of one dataclass (``parity.cases``), both
twins built from one row (``parity.harness``) and the one golden-fixture layout
(``parity.fixtures``).  Imports no test module and no tool."""
