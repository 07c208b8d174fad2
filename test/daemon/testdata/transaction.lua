-- A full transaction against moat with OpenDKIM's miltertest, an independent milter client.
-- Run: miltertest -D socket=unix:/path/moat.sock -s transaction.lua
local function fail(msg)
	mt.echo("FAIL: " .. msg)
	error(msg)
end

local conn = mt.connect(socket, 40, 0.25)
if conn == nil then fail("cannot connect to " .. socket) end

if mt.conninfo(conn, "client.example.org", "192.0.2.10") ~= nil then fail("conninfo") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then fail("connect not continued") end
if mt.helo(conn, "client.example.org") ~= nil then fail("helo") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then fail("helo not continued") end

mt.macro(conn, SMFIC_MAIL, "{auth_authen}", "alice", "{auth_type}", "PLAIN")
if mt.mailfrom(conn, "<sender@example.org>") ~= nil then fail("mailfrom") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then fail("mail not continued") end

if mt.rcptto(conn, "<ok@example.test>") ~= nil then fail("rcpt ok") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then fail("good recipient not continued") end
if mt.rcptto(conn, "<bad@example.test>") ~= nil then fail("rcpt bad") end
if mt.getreply(conn) ~= SMFIR_REPLYCODE then fail("bad recipient not refused with a reply code") end
if mt.rcptto(conn, "<later@example.test>") ~= nil then fail("rcpt later") end
if mt.getreply(conn) ~= SMFIR_REPLYCODE then fail("later recipient not refused with a reply code") end

if mt.header(conn, "From", "Sender <sender@example.org>") ~= nil then fail("header") end
if mt.header(conn, "Authentication-Results", "mx.moat.test; spf=pass") ~= nil then fail("header") end
if mt.header(conn, "Subject", "miltertest") ~= nil then fail("header") end
if mt.eoh(conn) ~= nil then fail("eoh") end
if mt.bodystring(conn, "hello from miltertest\r\n") ~= nil then fail("body") end
if mt.eom(conn) ~= nil then fail("eom") end
if mt.getreply(conn) ~= SMFIR_ACCEPT then fail("message not accepted") end

if not mt.eom_check(conn, MT_HDRADD, "X-Moat") then fail("no X-Moat header added") end
if not mt.eom_check(conn, MT_HDRADD, "X-Test-Check") then fail("no X-Test-Check header added") end
if not mt.eom_check(conn, MT_HDRINSERT, "Authentication-Results") then fail("no Authentication-Results inserted") end
if not mt.eom_check(conn, MT_HDRCHANGE, "Authentication-Results") then fail("forged Authentication-Results not removed") end

-- A second message on the same connection, refused at end of message.
if mt.mailfrom(conn, "<sender@example.org>") ~= nil then fail("mailfrom 2") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then fail("mail 2 not continued") end
if mt.rcptto(conn, "<ok@example.test>") ~= nil then fail("rcpt 2") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then fail("rcpt 2 not continued") end
if mt.header(conn, "Subject", "second") ~= nil then fail("header 2") end
if mt.eoh(conn) ~= nil then fail("eoh 2") end
if mt.bodystring(conn, "REJECT-THIS-BODY\r\n") ~= nil then fail("body 2") end
if mt.eom(conn) ~= nil then fail("eom 2") end
if mt.getreply(conn) ~= SMFIR_REPLYCODE then fail("second message not refused") end

mt.disconnect(conn)
mt.echo("moat transaction ok")
