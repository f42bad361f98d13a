import sys

from mcpgw.prestart.preserver import begin

begin(sys.argv[1:])  # a stdio `serve` answers its opening requests before the heavy imports

from mcpgw.cli import main  # noqa: E402

main()
