from spoke.cli import main

main()
