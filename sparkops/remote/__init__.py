"""Running argv on nodes: one node (`connection.NodeConn`, this machine or SSH with fabric),
all of them at once (`group.NodeGroup` and its `GroupResult`), large stdin and line-by-line
output (`stream`), and the OpenSSH client argv for hops between nodes (`openssh`)."""
