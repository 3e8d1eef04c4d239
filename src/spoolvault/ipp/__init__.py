"""IPP, the protocol: the RFC 8010 codec (`codec`), messages (`message`), protocol numbers
(`constants`) and the attributes of queues and jobs (`attributes`). The IPP server, a front
end, is `spoolvault.intake.ipp`; the IPP client of delivery and health is in `printers`."""
