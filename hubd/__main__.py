from hubd.cli import hubd_main

hubd_main()
