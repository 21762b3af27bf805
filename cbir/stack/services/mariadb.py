"""MariaDB from Debian's mariadb-server (the MySQL protocol), with its own data directory."""

from __future__ import annotations

import os
import shutil

import pymysql

from cbir.adapters import metadata_store
from cbir.stack.install import apt_install, require_tool, run_checked
from cbir.stack.services.base import LocalService, NotReady, Port

INSTALL_FIX = "run `cbir stack install` (it installs Debian's mariadb-server)"


class MariaDBService(LocalService):
    name = "mariadb"

    @property
    def ports(self) -> list[Port]:
        return [Port("mysql", self.settings.mysql.port, "CBIR_MYSQL__PORT")]

    @property
    def socket_path(self) -> str:
        return str(self.data_dir / "mysqld.sock")

    def is_installed(self) -> bool:
        return shutil.which("mariadb-install-db") is not None and (
            shutil.which("mariadbd") is not None or os.path.exists("/usr/sbin/mariadbd")
        )

    def install(self) -> None:
        apt_install(self.name, ["mariadb-server"], ["mariadbd", "mariadb-install-db"])

    def _user_flag(self) -> list[str]:
        return ["--user=root"] if os.geteuid() == 0 else []

    def prepare(self) -> None:
        super().prepare()
        datadir = self.data_dir / "db"
        if (datadir / "mysql").is_dir():
            return
        run_checked(
            self.name,
            [
                require_tool(self.name, "mariadb-install-db", INSTALL_FIX),
                "--no-defaults",
                f"--datadir={datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *self._user_flag(),
            ],
            "initialising the data directory",
            f"remove {datadir} and run `cbir stack up` again",
        )

    def command(self) -> list[str]:
        return [
            require_tool(self.name, "mariadbd", INSTALL_FIX),
            "--no-defaults",
            f"--datadir={self.data_dir / 'db'}",
            f"--socket={self.socket_path}",
            f"--pid-file={self.data_dir / 'mariadbd.pid'}",
            "--bind-address=127.0.0.1",
            f"--port={self.ports[0].number}",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=128M",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
            *self._user_flag(),
        ]

    def _root(self) -> pymysql.connections.Connection:
        return pymysql.connect(
            unix_socket=self.socket_path, user="root", connect_timeout=2, autocommit=True
        )

    def probe(self) -> None:
        try:
            conn = self._root()
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
            conn.close()
        except pymysql.MySQLError as exc:
            raise NotReady(f"SELECT 1 failed: {exc}") from exc

    def provision(self) -> None:
        mysql = self.settings.mysql
        conn = self._root()
        try:
            with conn.cursor() as cur:
                cur.execute(
                    f"CREATE DATABASE IF NOT EXISTS `{mysql.database}` CHARACTER SET utf8mb4"
                )
                password = mysql.password.get_secret_value()
                for host in ("127.0.0.1", "localhost"):
                    cur.execute(
                        "CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s",
                        (mysql.user, host, password),
                    )
                    cur.execute("ALTER USER %s@%s IDENTIFIED BY %s", (mysql.user, host, password))
                    cur.execute(
                        f"GRANT ALL PRIVILEGES ON `{mysql.database}`.* TO %s@%s", (mysql.user, host)
                    )
        finally:
            conn.close()
        with metadata_store.connect(mysql) as app:
            metadata_store.migrate(app)
