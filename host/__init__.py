"""Host side: copperd, the ports protocol, backends (soft VM, fpga link), traces, CLIs."""
